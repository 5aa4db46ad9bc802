/**
 * `stackbd check` of a DMG: everything open checks (the koly, the plist, every mish table and
 * the chunk layout), then the three CRC-32 checksums of spec/udif.md §5:
 * - the data fork's (koly): over the stored bytes of the data fork;
 * - each blkx's: over the decoded bytes of its partition in order, skipping ignore (type 2)
 *   chunks and counting zero-fill (type 0) chunks as zeros, as 7-Zip does;
 * - the master checksum (koly): over the four checksum bytes of every CRC-32 blkx, in plist
 *   order.
 * Every chunk is decoded once (not through the read cache), so a damaged chunk is named.
 *
 * - Never throws for a broken image: each problem is one line in `errors`. Checksums of other
 *   types (MD5) and chunks of a codec stackbd lacks are listed in `unverified`. Failing to
 *   read the file at all still throws, and so does an image stackbd refuses (encrypted).
 */
import { crc32 } from 'node:zlib';
import { CorruptedImageError, UnsupportedFormatError } from '../../block/errors.js';
import type { BlockFile } from '../../io/block-file.js';
import { openFdFile } from '../../io/fd-file.js';
import { ChunkTable, type ChunkInfo } from './chunk-table.js';
import { chunkName, decodeChunk } from './decode-chunk.js';
import type { UdifChecksum } from './koly.js';
import { CHECKSUM_CRC32 } from './layout.js';
import { loadStructure, type DmgStructure } from './load.js';

export interface DmgCheckReport {
  file: string;
  format: 'dmg';
  clean: boolean;
  errors: string[];
  /** What could not be verified, and why. */
  unverified: string[];
  /** Checksums found equal. */
  verified: string[];
}

const PIECE = 1024 * 1024;

const hex = (n: number): string => (n >>> 0).toString(16).toUpperCase().padStart(8, '0');
const storedCrc = (sum: UdifChecksum): number => sum.bytes.readUInt32BE(0);

/** CRC-32 of `length` bytes of the file at `position`, read in pieces. */
async function fileCrc(file: BlockFile, position: number, length: number, crc: number, buf: Buffer): Promise<number> {
  for (let done = 0; done < length; done += PIECE) {
    const piece = buf.subarray(0, Math.min(PIECE, length - done));
    await file.read(piece, position + done);
    crc = crc32(piece, crc);
  }
  return crc;
}

function zeroCrc(length: number, crc: number, zeros: Buffer): number {
  for (let done = 0; done < length; done += PIECE) crc = crc32(zeros.subarray(0, Math.min(PIECE, length - done)), crc);
  return crc;
}

export async function checkDmg(path: string, onProgress?: (done: number, total: number) => void): Promise<DmgCheckReport> {
  const report: DmgCheckReport = { file: path, format: 'dmg', clean: false, errors: [], unverified: [], verified: [] };
  const file = await openFdFile(path, { readOnly: true });
  try {
    let structure: DmgStructure;
    let table: ChunkTable;
    try {
      structure = await loadStructure(file);
      table = ChunkTable.build(structure, path);
    } catch (err) {
      if (!(err instanceof CorruptedImageError)) throw err;
      report.errors.push(err.detail);
      return report;
    }
    await checkSums(file, structure, table, report, onProgress);
    report.clean = report.errors.length === 0;
    return report;
  } finally {
    await file.close();
  }
}

async function checkSums(file: BlockFile, s: DmgStructure, table: ChunkTable, report: DmgCheckReport, onProgress?: (done: number, total: number) => void): Promise<void> {
  const buf = Buffer.allocUnsafe(PIECE);
  const zeros = Buffer.alloc(PIECE);
  const compare = (what: string, sum: UdifChecksum, crc: number): void => {
    if (sum.type !== CHECKSUM_CRC32) {
      if (sum.type !== 0) report.unverified.push(`${what}: checksum type ${sum.type} (only CRC32 is verified)`);
      return;
    }
    if (storedCrc(sum) === crc >>> 0) report.verified.push(what);
    else report.errors.push(`${what}: CRC32 is ${hex(crc)} but ${hex(storedCrc(sum))} is recorded`);
  };
  compare('data fork', s.koly.dataChecksum, await fileCrc(file, s.koly.dataForkOffset, s.koly.dataForkLength, 0, buf));

  // Chunks of one partition are consecutive in the table (partitions tile the disk).
  const crcs = new Map<number, number>();
  const failed = new Set<number>();
  for (let i = 0; i < table.count; i++) {
    const c = table.chunk(i);
    const p = s.partitions[c.partition];
    if (!p || failed.has(c.partition)) continue;
    const crc = crcs.get(c.partition) ?? 0;
    try {
      crcs.set(c.partition, await chunkCrc(file, c, crc, chunkName(c, p.name), buf, zeros));
    } catch (err) {
      if (!(err instanceof CorruptedImageError || err instanceof UnsupportedFormatError)) throw err;
      (err instanceof CorruptedImageError ? report.errors : report.unverified).push(err.detail);
      failed.add(c.partition);
    }
    onProgress?.(c.end, table.size);
  }
  for (const p of s.partitions) {
    if (!failed.has(p.index)) compare(`blkx ${p.index} "${p.name}"`, p.table.checksum, crcs.get(p.index) ?? 0);
  }

  // The master checksum chains the stored CRC-32s of the blkx tables, whatever they hold.
  const sums = s.partitions.filter((p) => p.table.checksum.type === CHECKSUM_CRC32).map((p) => p.table.checksum.bytes.subarray(0, 4));
  if (s.partitions.length > 0) compare('master checksum', s.koly.masterChecksum, crc32(Buffer.concat(sums)));
}

async function chunkCrc(file: BlockFile, c: ChunkInfo, crc: number, name: string, buf: Buffer, zeros: Buffer): Promise<number> {
  switch (c.kind) {
    case 'ignore':
      return crc;
    case 'zero':
      return zeroCrc(c.end - c.start, crc, zeros);
    case 'raw': {
      // A stub's short last sector reads as zeros past the stored bytes.
      const stored = Math.min(c.length, c.end - c.start);
      return zeroCrc(c.end - c.start - stored, await fileCrc(file, c.position, stored, crc, buf), zeros);
    }
    default:
      return crc32(await decodeChunk(file, c, name), crc);
  }
}
