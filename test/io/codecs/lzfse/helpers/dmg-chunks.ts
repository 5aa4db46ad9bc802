/**
 * Test-only: the chunks of a UDIF (.dmg) image found the straightforward way, so the LZFSE
 * decoder can be checked on Apple-made chunks without the DMG reader (shared/spec/udif.md
 * §2–§4). The koly trailer is the last 512 bytes; its XML plist lists one `mish` table per
 * `blkx` entry; each table has 40-byte chunk entries from offset 0xCC. Offsets are big-endian.
 */
import { createHash } from 'node:crypto';

export const ChunkType = {
  ZERO: 0x00000000,
  RAW: 0x00000001,
  IGNORE: 0x00000002,
  LZFSE: 0x80000007,
  COMMENT: 0x7ffffffe,
  END: 0xffffffff,
} as const;

const SECTOR = 512;

export interface DmgChunk {
  type: number;
  /** Absolute first sector in the decoded disk. */
  sector: number;
  sectorCount: number;
  /** The chunk's stored bytes. */
  data: Uint8Array;
}

export function dmgChunks(image: Buffer): DmgChunk[] {
  const koly = image.subarray(image.length - 512);
  if (koly.toString('latin1', 0, 4) !== 'koly') throw new Error('no koly trailer');
  const xmlOffset = Number(koly.readBigUInt64BE(0xd8));
  const xmlLength = Number(koly.readBigUInt64BE(0xe0));
  const xml = image.toString('latin1', xmlOffset, xmlOffset + xmlLength);
  const blkxAt = xml.indexOf('<key>blkx</key>');
  if (blkxAt < 0) throw new Error('no blkx in the plist');
  const blkx = xml.slice(blkxAt, xml.indexOf('</array>', blkxAt));
  const chunks: DmgChunk[] = [];
  for (const match of blkx.matchAll(/<key>Data<\/key>\s*<data>([^<]*)<\/data>/g)) {
    const mish = Buffer.from(match[1].replace(/\s+/g, ''), 'base64');
    if (mish.toString('latin1', 0, 4) !== 'mish') throw new Error('blkx entry without a mish table');
    const firstSector = Number(mish.readBigUInt64BE(8));
    const dataStart = Number(mish.readBigUInt64BE(24));
    const count = mish.readUInt32BE(200);
    for (let i = 0; i < count; i++) {
      const at = 0xcc + 40 * i;
      const type = mish.readUInt32BE(at);
      if (type === ChunkType.COMMENT || type === ChunkType.END) continue;
      const offset = dataStart + Number(mish.readBigUInt64BE(at + 24));
      const length = Number(mish.readBigUInt64BE(at + 32));
      chunks.push({
        type,
        sector: firstSector + Number(mish.readBigUInt64BE(at + 8)),
        sectorCount: Number(mish.readBigUInt64BE(at + 16)),
        data: image.subarray(offset, offset + length),
      });
    }
  }
  return chunks;
}

/**
 * The decoded disk: chunks placed at their sectors; zero and ignored chunks stay zeros;
 * `decode` turns a compressed chunk into its sectors' bytes and returns how many it wrote.
 */
export function assembleDisk(chunks: DmgChunk[], decode: (chunk: DmgChunk, out: Uint8Array) => number): Buffer {
  const sectors = chunks.reduce((n, c) => Math.max(n, c.sector + c.sectorCount), 0);
  const disk = Buffer.alloc(sectors * SECTOR);
  for (const chunk of chunks) {
    const out = disk.subarray(chunk.sector * SECTOR, (chunk.sector + chunk.sectorCount) * SECTOR);
    if (chunk.type === ChunkType.ZERO || chunk.type === ChunkType.IGNORE) continue;
    if (chunk.type === ChunkType.RAW) {
      out.set(chunk.data);
      continue;
    }
    const written = decode(chunk, out);
    if (written !== out.length) throw new Error(`chunk at sector ${chunk.sector} decoded to ${written} of ${out.length} bytes`);
  }
  return disk;
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
