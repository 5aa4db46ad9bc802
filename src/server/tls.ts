/**
 * TLS for NBD's STARTTLS option: X.509 certificates (optionally requiring client certificates
 * signed by a CA) or pre-shared keys in the `identity:hexkey` file format nbdkit and QEMU use.
 * `upgradeToTls` wraps a plain socket after the server has sent STARTTLS's ACK.
 */
import fs from 'node:fs/promises';
import type { Socket } from 'node:net';
import tls from 'node:tls';
import { parsePskKeys, PSK_CIPHERS, PskFileError } from '../nbd/psk-file.js';

export type TlsMode = 'off' | 'on' | 'require';

export interface TlsSettings {
  mode: Exclude<TlsMode, 'off'>;
  context: tls.SecureContext;
  /** Verify client certificates against the CA and refuse clients without one. */
  requireClientCert: boolean;
  /** PSK identities and keys; when set, only PSK cipher suites (TLS 1.2) are offered. */
  psk: Map<string, Buffer> | null;
}

export class TlsConfigError extends Error {
  override name = 'TlsConfigError';
}

export interface TlsFiles {
  mode: TlsMode;
  cert?: string;
  key?: string;
  ca?: string;
  pskFile?: string;
}

async function readFile(file: string, what: string): Promise<Buffer> {
  try {
    return await fs.readFile(file);
  } catch (err) {
    throw new TlsConfigError(`${file}: cannot read the ${what} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
}

/** Parses `identity:hexkey` lines; blank lines and lines starting with # are ignored. */
export function parsePskFile(text: string, file: string): Map<string, Buffer> {
  try {
    return parsePskKeys(text, file);
  } catch (err) {
    throw err instanceof PskFileError ? new TlsConfigError(err.message) : err;
  }
}

export async function loadTlsSettings(files: TlsFiles): Promise<TlsSettings | null> {
  if (files.mode === 'off') {
    if (files.cert || files.key || files.pskFile) throw new TlsConfigError('TLS files were given but --tls is off');
    return null;
  }
  if (files.pskFile) {
    if (files.cert || files.key) throw new TlsConfigError('use either --tls-psk or --tls-cert/--tls-key, not both');
    const psk = parsePskFile((await readFile(files.pskFile, 'PSK file')).toString('utf8'), files.pskFile);
    const context = tls.createSecureContext({ ciphers: PSK_CIPHERS, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
    return { mode: files.mode, context, requireClientCert: false, psk };
  }
  if (!files.cert || !files.key) throw new TlsConfigError('--tls needs --tls-cert and --tls-key (or --tls-psk)');
  const context = tls.createSecureContext({
    cert: await readFile(files.cert, 'certificate'),
    key: await readFile(files.key, 'private key'),
    ...(files.ca ? { ca: await readFile(files.ca, 'CA certificate') } : {}),
    minVersion: 'TLSv1.2',
  });
  return { mode: files.mode, context, requireClientCert: files.ca !== undefined, psk: null };
}

/** Starts the server side of a TLS handshake on `socket`; resolves once it completed. */
export function upgradeToTls(socket: Socket, settings: TlsSettings): Promise<tls.TLSSocket> {
  const psk = settings.psk;
  const secure = new tls.TLSSocket(socket, {
    isServer: true,
    secureContext: settings.context,
    requestCert: settings.requireClientCert,
    rejectUnauthorized: settings.requireClientCert,
    ...(psk ? { pskCallback: (_socket: tls.TLSSocket, identity: string) => psk.get(identity) ?? null } : {}),
  });
  return new Promise((resolve, reject) => {
    secure.once('secure', () => resolve(secure));
    secure.once('error', reject);
    secure.once('close', () => reject(new Error('connection closed during the TLS handshake')));
  });
}
