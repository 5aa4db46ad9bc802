/** Opening a remote base failed: the URL (redacted) or s3://bucket/key first, then what the server said. */
import { ImageError } from '../block/errors.js';

export class RemoteSourceError extends ImageError {
  override name = 'RemoteSourceError';
}

/** `Code: Message` from an S3-style XML error body, or null when the body has none. */
export function xmlErrorCode(body: string): string | null {
  const code = /<Code>([^<]{1,200})<\/Code>/.exec(body)?.[1];
  if (!code) return null;
  const message = /<Message>([^<]{1,500})<\/Message>/.exec(body)?.[1];
  return message ? `${code}: ${message}` : code;
}
