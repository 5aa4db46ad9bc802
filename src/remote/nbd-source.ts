/**
 * Where an nbd:// base comes from: the URI parsed (src/nbd/uri.ts), and its TLS credentials
 * read from the files its query names. A problem here is an NbdSourceError naming the URI.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ImageError } from '../block/errors.js';
import type { ClientTlsOptions } from '../nbd/client-tls.js';
import { parsePskKeys } from '../nbd/psk-file.js';
import { parseNbdUri, type NbdTarget } from '../nbd/uri.js';

/** An NBD base that cannot be opened: a bad URI, unreadable credentials, an upstream that does not answer. */
export class NbdSourceError extends ImageError {
  override name = 'NbdSourceError';
}

export interface NbdSource {
  /** The URI as given: how `path` and messages name the base. */
  readonly display: string;
  readonly target: NbdTarget;
  readonly tls?: ClientTlsOptions;
}

export { isNbdSource } from './source.js';

async function readIfPresent(file: string): Promise<Buffer | undefined> {
  try {
    return await fs.readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** libnbd's layout: DIR/ca-cert.pem (else the system's CAs), and DIR/client-cert.pem with DIR/client-key.pem when the server wants a client. */
async function x509Options(dir: string): Promise<ClientTlsOptions> {
  const [ca, cert, key] = await Promise.all(['ca-cert.pem', 'client-cert.pem', 'client-key.pem'].map((f) => readIfPresent(path.join(dir, f))));
  return { ...(ca ? { ca } : {}), ...(cert && key ? { cert, key } : {}) };
}

/** The key of `tls-username`, else of the login name, else the file's only key. */
async function pskOptions(file: string, username: string | undefined): Promise<ClientTlsOptions> {
  const keys = parsePskKeys((await fs.readFile(file)).toString('utf8'), file);
  const login = os.userInfo().username;
  const identity = username ?? (keys.has(login) ? login : keys.size === 1 ? [...keys.keys()][0] : login);
  const key = keys.get(identity);
  if (!key) throw new Error(`${file} has no key for identity ${JSON.stringify(identity)} (set tls-username=)`);
  return { psk: { identity, key } };
}

export async function resolveNbdSource(uri: string): Promise<NbdSource> {
  let target: NbdTarget;
  try {
    target = parseNbdUri(uri);
  } catch (err) {
    throw new NbdSourceError(uri, err instanceof Error ? err.message.replace(`${uri}: `, '') : String(err));
  }
  if (!target.tls) return { display: uri, target };
  try {
    const credentials = target.tlsPskFile ? await pskOptions(target.tlsPskFile, target.tlsUsername) : target.tlsCertificates ? await x509Options(target.tlsCertificates) : {};
    const servername = target.tlsHostname ?? (target.kind === 'tcp' ? target.host : 'localhost');
    return { display: uri, target, tls: { ...credentials, servername } };
  } catch (err) {
    throw new NbdSourceError(uri, `cannot read the TLS credentials: ${err instanceof Error ? err.message : String(err)}`);
  }
}
