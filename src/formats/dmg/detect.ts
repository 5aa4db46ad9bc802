/**
 * How probing recognises a UDIF image: a `koly` trailer in the last 512 bytes (or, in old
 * images, the first), or an encryption magic (which open then refuses by name, rather than the
 * file being served as a raw disk).
 */
import { hasKolyMagic } from './koly.js';
import { KOLY_BYTES } from './layout.js';
import { encryptionOf } from './load.js';

export function looksLikeDmg(head: Buffer, tail: Buffer): boolean {
  return (tail.length === KOLY_BYTES && hasKolyMagic(tail)) || hasKolyMagic(head) || encryptionOf(head, tail) !== null;
}
