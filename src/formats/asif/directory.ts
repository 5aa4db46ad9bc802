/**
 * The two directory copies (spec §4): `u64 sequence, u64 table[T]`.
 *
 * - Stores: per copy a sequence number and, for each table index t, the physical chunk of the
 *   table mapping logical bytes [t·D, (t+1)·D), 0 when there is none.
 * - States: the copy with the higher sequence is active; the other is the scratch space of the
 *   next commit.
 * - Invariants: the active copy is never written. A commit writes the whole inactive copy with
 *   its old (lower) sequence kept, syncs, then writes the new sequence (active + 1) alone: an
 *   8-byte write inside one sector. A crash before that write leaves the old copy active; a
 *   crash after it finds the new copy complete. So the directory flips atomically even though
 *   the copy spans many sectors.
 */

export interface DirectoryCopy {
  readonly offset: number;
  readonly sequence: bigint;
}

export interface DecodedDirectory {
  readonly sequence: bigint;
  /** Physical chunk per table index; values above 2^53 come out inexact but stay huge. */
  readonly tables: Float64Array;
}

export function decodeDirectory(buf: Buffer, entries: number): DecodedDirectory {
  const tables = new Float64Array(entries);
  for (let t = 0; t < entries; t++) tables[t] = readU64(buf, 8 + 8 * t);
  return { sequence: buf.readBigUInt64BE(0), tables };
}

/** The body of a directory (everything after the sequence), for the first step of a commit. */
export function encodeDirectoryBody(tables: Float64Array): Buffer {
  const b = Buffer.alloc(8 * tables.length);
  for (let t = 0; t < tables.length; t++) {
    if (tables[t] !== 0) writeU64(b, 8 * t, tables[t]);
  }
  return b;
}

/** The 8 bytes of a sequence number, for the second (committing) step. */
export function encodeSequence(sequence: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(sequence);
  return b;
}

/** A whole directory copy, for new images. */
export function encodeDirectory(sequence: bigint, tables: Float64Array): Buffer {
  return Buffer.concat([encodeSequence(sequence), encodeDirectoryBody(tables)]);
}

/** Index (0 = A, 1 = B) of the active copy, or null when both sequences are equal. */
export function activeCopy(a: bigint, b: bigint): 0 | 1 | null {
  if (a === b) return null;
  return a > b ? 0 : 1;
}

/** What readU64 and writeU64 need: a Buffer, or a table held in pages (paged-table.ts). */
export interface WordBytes {
  readUInt32BE(offset: number): number;
  writeUInt32BE(value: number, offset: number): number;
}

/** A u64 as a number: exact below 2^53, which every valid chunk number is. */
export function readU64(buf: WordBytes, offset: number): number {
  return buf.readUInt32BE(offset) * 2 ** 32 + buf.readUInt32BE(offset + 4);
}

export function writeU64(buf: WordBytes, offset: number, value: number): void {
  buf.writeUInt32BE(Math.floor(value / 2 ** 32), offset);
  buf.writeUInt32BE(value % 2 ** 32, offset + 4);
}
