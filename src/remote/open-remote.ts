/** Opening a remote base: the URL (or s3:// location) turned into a request target, probed, and wrapped as a layer. */
import type { Layer } from '../formats/layer.js';
import { loadAwsSettings } from './aws-config.js';
import { resolveRemoteOptions, type RemoteOptions } from './options.js';
import { redactUrl } from './redact.js';
import { RemoteSourceError } from './remote-error.js';
import { RemoteLayer } from './remote-layer.js';
import { RemoteObject } from './remote-object.js';
import { systemClock } from './retry.js';
import { parseS3Url, s3ObjectUrl, s3Signer } from './s3.js';
import type { HttpRequest } from './transport.js';
import { createUndiciTransport } from './undici-transport.js';

interface Target {
  format: 'http' | 's3';
  url: URL;
  display: string;
  headers: Record<string, string>;
  sign?: (request: HttpRequest) => HttpRequest;
  /** Appended to a failure to open, e.g. where S3 credentials came from. */
  hint: string;
}

async function httpTarget(spec: string, headers: Readonly<Record<string, string>>): Promise<Target> {
  let url: URL;
  try {
    url = new URL(spec);
  } catch {
    throw new RemoteSourceError(redactUrl(spec), 'not a valid URL');
  }
  const own: Record<string, string> = { ...headers };
  // Userinfo becomes Basic authentication for the URL's own origin, and leaves the URL.
  if (url.username || url.password) {
    own.Authorization = `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64')}`;
    url.username = '';
    url.password = '';
  }
  url.hash = '';
  return { format: 'http', url, display: redactUrl(spec), headers: own, hint: '' };
}

async function s3Target(spec: string, options: ReturnType<typeof resolveRemoteOptions>): Promise<Target> {
  let location;
  try {
    location = parseS3Url(spec);
  } catch (err) {
    throw new RemoteSourceError(spec.split('?')[0], err instanceof Error ? err.message : String(err));
  }
  const settings = await loadAwsSettings(options.env, options.s3Endpoint);
  const url = s3ObjectUrl(location, settings, options.s3Addressing);
  const display = `s3://${location.bucket}/${location.key}`;
  const hint = settings.credentials
    ? ` [credentials from ${settings.credentials.source}, region ${settings.region}, ${redactUrl(url)}]`
    : ` [no credentials found (AWS_ACCESS_KEY_ID, the shared credentials file, profile ${settings.profile}): the request was unsigned; region ${settings.region}, ${redactUrl(url)}]`;
  return {
    format: 's3',
    url,
    display,
    headers: { ...options.headers },
    ...(settings.credentials ? { sign: s3Signer(settings.credentials, settings.region) } : {}),
    hint,
  };
}

/** Opens a remote base: learns its size and version (failing with a RemoteSourceError naming it), then serves it. */
export async function openRemoteLayer(spec: string, remoteOptions: RemoteOptions = {}): Promise<Layer> {
  const options = resolveRemoteOptions(remoteOptions);
  const target = /^s3:/i.test(spec) ? await s3Target(spec, options) : await httpTarget(spec, options.headers);
  const transport = await createUndiciTransport(options);
  const object = new RemoteObject({
    url: target.url,
    display: target.display,
    transport: transport.send,
    headers: target.headers,
    ...(target.sign ? { sign: target.sign } : {}),
    retries: options.retries,
    maxRedirects: options.maxRedirects,
    clock: options.clock ?? systemClock,
    onWarning: options.onWarning,
  });
  try {
    await object.probe();
  } catch (err) {
    await transport.close().catch(() => undefined);
    if (err instanceof RemoteSourceError && target.hint) throw new RemoteSourceError(err.file, `${err.detail}${target.hint}`);
    throw err;
  }
  return new RemoteLayer(target.format, object, options, () => transport.close());
}
