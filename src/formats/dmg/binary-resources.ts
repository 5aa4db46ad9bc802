/**
 * The binary resource fork of old UDIF images (before Mac OS X 10.2; spec/udif.md §3), used
 * when the koly names no XML plist but a resource fork: a classic Mac resource file whose
 * `blkx` resources are the mish tables.
 *
 * - Layout: a 16-byte header (data offset, map offset, data length, map length); the map
 *   holds a type list (4-char type, count − 1, offset of its reference list) and reference
 *   entries (ID, name offset or 0xFFFF, attributes, 24-bit offset into the data area); each
 *   resource in the data area is a u32 length and its bytes; names are Pascal strings.
 * - Every offset is checked against the fork before it is followed.
 */
import { CorruptedImageError } from '../../block/errors.js';
import type { BlkxResource } from './xml-resources.js';

const NO_NAME = 0xffff;

export function parseBinaryResources(fork: Buffer, file: string): BlkxResource[] {
  const fail = (detail: string): never => {
    throw new CorruptedImageError(file, `the resource fork ${detail}`);
  };
  const need = (at: number, length: number, what: string): void => {
    if (at < 0 || at + length > fork.length) fail(`${what} at ${at} lies outside its ${fork.length} bytes`);
  };
  need(0, 16, 'header');
  const dataOffset = fork.readUInt32BE(0);
  const mapOffset = fork.readUInt32BE(4);
  const dataLength = fork.readUInt32BE(8);
  const mapLength = fork.readUInt32BE(12);
  need(dataOffset, dataLength, 'data area');
  need(mapOffset, Math.max(mapLength, 28), 'resource map');
  const typeList = mapOffset + fork.readUInt16BE(mapOffset + 24);
  const nameList = mapOffset + fork.readUInt16BE(mapOffset + 26);
  need(typeList, 2, 'type list');
  const types = (fork.readUInt16BE(typeList) + 1) & 0xffff;
  const out: BlkxResource[] = [];
  for (let t = 0; t < types; t++) {
    const entry = typeList + 2 + t * 8;
    need(entry, 8, 'type entry');
    if (fork.toString('latin1', entry, entry + 4) !== 'blkx') continue;
    const count = fork.readUInt16BE(entry + 4) + 1;
    const refs = typeList + fork.readUInt16BE(entry + 6);
    for (let r = 0; r < count; r++) {
      const ref = refs + r * 12;
      need(ref, 12, 'reference entry');
      const id = fork.readInt16BE(ref);
      const nameOffset = fork.readUInt16BE(ref + 2);
      const at = fork.readUIntBE(ref + 5, 3);
      if (at + 4 > dataLength) fail(`blkx resource ${id} lies outside the data area`);
      const length = fork.readUInt32BE(dataOffset + at);
      if (at + 4 + length > dataLength) fail(`blkx resource ${id} (${length} bytes) runs past the data area`);
      let name = '';
      if (nameOffset !== NO_NAME) {
        need(nameList + nameOffset, 1, 'resource name');
        const n = fork[nameList + nameOffset];
        need(nameList + nameOffset + 1, n, 'resource name');
        name = fork.toString('latin1', nameList + nameOffset + 1, nameList + nameOffset + 1 + n);
      }
      const start = dataOffset + at + 4;
      out.push({ name, id, data: Buffer.from(fork.subarray(start, start + length)) });
    }
  }
  if (out.length === 0) fail("has no 'blkx' resources");
  return out;
}
