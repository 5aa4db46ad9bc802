/** Telling a remote base from a file path, and naming it without its secrets (no network code here). */
import { redactUrl } from './redact.js';

const REMOTE_SCHEMES = /^(https?|s3):\/\//i;

/** True for a base given as a URL rather than a file (http://, https://, s3://). */
export function isRemoteSource(spec: string): boolean {
  return REMOTE_SCHEMES.test(spec);
}

/** How a base is named in messages, logs and export descriptions: a URL without its secrets, a path as is. */
export function displaySource(spec: string): string {
  return isRemoteSource(spec) ? redactUrl(spec) : spec;
}
