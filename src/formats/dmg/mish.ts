/**
 * A `mish` block table (spec/udif.md §4): the chunk list of one partition (one blkx entry).
 * A 204-byte header (first sector and sector count on the disk, data start, checksum of the
 * decoded partition) and 40-byte entries (type, sector relative to the table, sector count,
 * offset and length of the stored bytes in the data fork).
 *
 * - Invariants checked on parse: size exactly 204 + 40n; version 1; the entries other than
 *   comments tile [0, sector count) in order with no gap or overlap; the terminator is the last
 *   entry and ends the tiling; data chunks cover at least one sector; a raw chunk stores exactly
 *   its sectors; a compressed chunk stores 1 byte or more and decodes to at most
 *   MAX_DECODED_CHUNK. Unknown entry types are refused by name.
 * - Where the stored bytes lie in the file is checked by the chunk table, which knows the data fork.
 */
import { CorruptedImageError, UnsupportedFormatError } from '../../block/errors.js';
import { crc32Checksum, type UdifChecksum } from './koly.js';
import {
  CHECKSUM_BYTES,
  ChunkType,
  chunkKindOf,
  isCompressed,
  MAX_DECODED_CHUNK,
  MAX_SECTORS,
  MAX_STORED_CHUNK,
  MISH_ENTRY_BYTES,
  MISH_HEADER_BYTES,
  MISH_MAGIC,
  MISH_VERSION,
  SECTOR,
  type ChunkKind,
} from './layout.js';

/** A chunk that covers sectors (comments and the terminator are left out). */
export interface MishChunk {
  kind: ChunkKind;
  /** Index of the entry in the table (for messages). */
  entry: number;
  /** Relative to the table's first sector. */
  sector: number;
  sectors: number;
  /** Relative to the data fork (data start not yet added). */
  offset: number;
  length: number;
}

export interface MishTable {
  firstSector: number;
  sectorCount: number;
  dataStart: number;
  bufferSectors: number;
  descriptor: number;
  checksum: UdifChecksum;
  chunks: MishChunk[];
}

function u64(buf: Buffer, at: number, fail: (detail: string) => never, field: string): number {
  const value = buf.readBigUInt64BE(at);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${field} ${value} is out of range`);
  return Number(value);
}

/** Parses and checks a mish table; `where` names it in messages (`blkx 2 "name"`). */
export function parseMish(data: Buffer, file: string, where: string): MishTable {
  const fail = (detail: string): never => {
    throw new CorruptedImageError(file, `${where}: ${detail}`);
  };
  if (data.length < MISH_HEADER_BYTES || data.readUInt32BE(0) !== MISH_MAGIC) fail('no mish block table');
  const version = data.readUInt32BE(4);
  if (version !== MISH_VERSION) throw new UnsupportedFormatError(file, `${where}: mish version ${version} is not supported`);
  const count = data.readUInt32BE(200);
  if (data.length !== MISH_HEADER_BYTES + MISH_ENTRY_BYTES * count) {
    fail(`the mish table is ${data.length} bytes but ${count} entries need ${MISH_HEADER_BYTES + MISH_ENTRY_BYTES * count}`);
  }
  const firstSector = u64(data, 8, fail, 'first sector');
  const sectorCount = u64(data, 16, fail, 'sector count');
  if (firstSector + sectorCount > MAX_SECTORS) fail(`sectors ${firstSector} + ${sectorCount} are out of range`);
  const table: MishTable = {
    firstSector,
    sectorCount,
    dataStart: u64(data, 24, fail, 'data start'),
    bufferSectors: data.readUInt32BE(32),
    descriptor: data.readUInt32BE(36),
    checksum: { type: data.readUInt32BE(64), bits: data.readUInt32BE(68), bytes: Buffer.from(data.subarray(72, 72 + CHECKSUM_BYTES)) },
    chunks: [],
  };
  let next = 0;
  let ended = false;
  for (let i = 0; i < count; i++) {
    const at = MISH_HEADER_BYTES + i * MISH_ENTRY_BYTES;
    const type = data.readUInt32BE(at);
    if (ended) fail(`entry ${i} follows the terminator`);
    if (type === ChunkType.COMMENT) continue;
    const sector = u64(data, at + 8, fail, `entry ${i} sector`);
    const sectors = u64(data, at + 16, fail, `entry ${i} sector count`);
    if (type === ChunkType.TERMINATOR) {
      if (next !== sectorCount) fail(`the chunks cover ${next} sectors but the table has ${sectorCount}`);
      ended = true;
      continue;
    }
    const kind = chunkKindOf(type);
    if (!kind) throw new UnsupportedFormatError(file, `${where}: entry ${i} has chunk type 0x${type.toString(16).padStart(8, '0')}, which stackbd does not know`);
    if (sector !== next) fail(`entry ${i} starts at sector ${sector}, expected ${next} (chunks overlap, leave a gap or are out of order)`);
    if (sector + sectors > sectorCount) fail(`entry ${i} (sectors ${sector}+${sectors}) runs past the table's ${sectorCount} sectors`);
    const offset = u64(data, at + 24, fail, `entry ${i} offset`);
    const length = u64(data, at + 32, fail, `entry ${i} length`);
    next = sector + sectors;
    if (kind === 'zero' || kind === 'ignore') {
      if (sectors > 0) table.chunks.push({ kind, entry: i, sector, sectors, offset: 0, length: 0 });
      continue;
    }
    if (sectors === 0) fail(`entry ${i} (${kind}) covers no sectors`);
    if (kind === 'raw' && length !== sectors * SECTOR) fail(`entry ${i} (raw, ${sectors} sectors) stores ${length} bytes, not ${sectors * SECTOR}`);
    if (isCompressed(kind)) {
      if (sectors * SECTOR > MAX_DECODED_CHUNK) {
        throw new UnsupportedFormatError(file, `${where}: entry ${i} is a ${kind} chunk of ${sectors} sectors; stackbd decodes chunks of at most ${MAX_DECODED_CHUNK / SECTOR}`);
      }
      if (length === 0 || length > MAX_STORED_CHUNK) fail(`entry ${i} (${kind}) stores ${length} bytes`);
    }
    table.chunks.push({ kind, entry: i, sector, sectors, offset, length });
  }
  if (!ended) fail('the mish table has no terminator');
  return table;
}

/** What the writer puts in one table entry. */
export interface MishEntryOut {
  type: number;
  sector: number;
  sectors: number;
  offset: number;
  length: number;
}

export interface MishOut {
  firstSector: number;
  sectorCount: number;
  bufferSectors: number;
  descriptor: number;
  crc: number;
  /** Data entries; the terminator is added here. */
  entries: readonly MishEntryOut[];
  /** Where the data fork ends (the terminator's offset). */
  dataEnd: number;
}

export function encodeMish(t: MishOut): Buffer {
  const all = [...t.entries, { type: ChunkType.TERMINATOR, sector: t.sectorCount, sectors: 0, offset: t.dataEnd, length: 0 }];
  const buf = Buffer.alloc(MISH_HEADER_BYTES + MISH_ENTRY_BYTES * all.length);
  buf.writeUInt32BE(MISH_MAGIC, 0);
  buf.writeUInt32BE(MISH_VERSION, 4);
  buf.writeBigUInt64BE(BigInt(t.firstSector), 8);
  buf.writeBigUInt64BE(BigInt(t.sectorCount), 16);
  buf.writeBigUInt64BE(0n, 24);
  buf.writeUInt32BE(t.bufferSectors, 32);
  buf.writeUInt32BE(t.descriptor, 36);
  const sum = crc32Checksum(t.crc);
  buf.writeUInt32BE(sum.type, 64);
  buf.writeUInt32BE(sum.bits, 68);
  sum.bytes.copy(buf, 72);
  buf.writeUInt32BE(all.length, 200);
  all.forEach((e, i) => {
    const at = MISH_HEADER_BYTES + i * MISH_ENTRY_BYTES;
    buf.writeUInt32BE(e.type, at);
    buf.writeBigUInt64BE(BigInt(e.sector), at + 8);
    buf.writeBigUInt64BE(BigInt(e.sectors), at + 16);
    buf.writeBigUInt64BE(BigInt(e.offset), at + 24);
    buf.writeBigUInt64BE(BigInt(e.length), at + 32);
  });
  return buf;
}
