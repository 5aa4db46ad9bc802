/** Telling a remote base from a file path, and naming it without its secrets (no network code here). */
import { redactUrl } from './redact.js';

const HTTP_SCHEMES = /^(https?|s3):\/\//i;
const NBD_SCHEMES = /^nbds?(\+unix)?:\/\//i;

/** True for a base given as a URL rather than a file (http://, https://, s3://, nbd://, nbds://, nbd+unix://). */
export function isRemoteSource(spec: string): boolean {
  return HTTP_SCHEMES.test(spec) || NBD_SCHEMES.test(spec);
}

/** True for an upstream NBD export (`nbd://`, `nbds://`, `nbd+unix://`, `nbds+unix://`). */
export function isNbdSource(spec: string): boolean {
  return NBD_SCHEMES.test(spec);
}

/**
 * How a base is named in messages, logs and export descriptions: an HTTP or S3 URL without its
 * secrets (a presigned query is one), an NBD URI as is (its query holds paths, not secrets), a
 * path as is.
 */
export function displaySource(spec: string): string {
  return HTTP_SCHEMES.test(spec) ? redactUrl(spec) : spec;
}
