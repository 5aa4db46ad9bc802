/**
 * Pre-shared key files in the `identity:hexkey` format nbdkit, QEMU and libnbd use: one key a
 * line, blank lines and lines starting with # ignored. Both the server (--tls-psk) and the
 * client (tls-psk-file= in an nbds:// URI) read them, and offer the same cipher suites.
 */

/** TLS 1.2 PSK suites GnuTLS peers (libnbd, QEMU, nbdkit) offer and accept. */
export const PSK_CIPHERS = [
  'ECDHE-PSK-AES256-CBC-SHA384',
  'ECDHE-PSK-AES128-CBC-SHA256',
  'ECDHE-PSK-CHACHA20-POLY1305',
  'DHE-PSK-AES256-GCM-SHA384',
  'DHE-PSK-AES128-GCM-SHA256',
  'PSK-AES256-GCM-SHA384',
  'PSK-AES128-GCM-SHA256',
  'PSK-CHACHA20-POLY1305',
].join(':');

export class PskFileError extends Error {
  override name = 'PskFileError';
}

export function parsePskKeys(text: string, file: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.lastIndexOf(':');
    const identity = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (colon <= 0 || !/^([0-9a-fA-F]{2})+$/.test(hex)) {
      throw new PskFileError(`${file}:${i + 1}: expected identity:hexkey`);
    }
    keys.set(identity, Buffer.from(hex, 'hex'));
  });
  if (keys.size === 0) throw new PskFileError(`${file}: no identity:hexkey lines`);
  return keys;
}
