/**
 * Tables (spec §5): one chunk each, G groups of N data entries followed by one bitmap entry.
 *
 * - Stores: per logical chunk a u64 data entry: status in bits 63–62, reserved bits 61–55 (zero),
 *   the physical chunk in bits 54–0; per group the physical chunk of its bitmap (0 = none).
 * - States of a data entry: 00 never written and 10 discarded (both carry chunk 0), 01 fully
 *   written and 11 partly written (both carry a non-zero chunk; 11 consults the bitmap).
 * - Invariants: entries are read and written in place in the table's bytes (a Buffer, or a
 *   PagedTable in memory), which are the exact on-disk image of the table; every entry sits
 *   inside one 512-byte sector, so a torn table write leaves each entry either old or new,
 *   never mixed.
 */
import { readU64, writeU64 } from './directory.js';
import { bitmapEntryOffset, dataEntryOffset, type ChunkStatus, type Geometry } from './layout.js';
import type { TableBytes } from './paged-table.js';

/** Where logical chunk L is described. */
export interface ChunkAddress {
  /** Table index in the directory. */
  readonly table: number;
  /** Byte offset of the data entry inside the table. */
  readonly entryOffset: number;
  /** Group index inside the table. */
  readonly group: number;
  /** Byte offset of the group's bitmap entry inside the table. */
  readonly bitmapEntryOffset: number;
  /** Byte offset of the chunk's slice inside the group's bitmap chunk. */
  readonly sliceOffset: number;
}

export function addressOf(geo: Geometry, logical: number): ChunkAddress {
  const table = Math.floor(logical / geo.chunksPerTable);
  const k = logical - table * geo.chunksPerTable;
  const group = Math.floor(k / geo.entriesPerGroup);
  return {
    table,
    entryOffset: dataEntryOffset(geo, k),
    group,
    bitmapEntryOffset: bitmapEntryOffset(geo, group),
    sliceOffset: (k - group * geo.entriesPerGroup) * geo.sliceBytes,
  };
}

/** The first logical chunk of group `group` of table `table`. */
export function firstChunkOfGroup(geo: Geometry, table: number, group: number): number {
  return table * geo.chunksPerTable + group * geo.entriesPerGroup;
}

export function entryStatus(table: TableBytes, offset: number): ChunkStatus {
  return (table.readUInt8(offset) >>> 6) as ChunkStatus;
}

export function entryChunk(table: TableBytes, offset: number): number {
  return (table.readUInt32BE(offset) & 0x7fffff) * 2 ** 32 + table.readUInt32BE(offset + 4);
}

/** Bits 61–55: must be zero. */
export function entryReserved(table: TableBytes, offset: number): number {
  return (table.readUInt32BE(offset) >>> 23) & 0x7f;
}

export function writeEntry(table: TableBytes, offset: number, status: ChunkStatus, chunk: number): void {
  const hi = Math.floor(chunk / 2 ** 32);
  table.writeUInt32BE(((status << 30) | hi) >>> 0, offset);
  table.writeUInt32BE(chunk % 2 ** 32, offset + 4);
}

export function bitmapChunkAt(table: TableBytes, offset: number): number {
  return readU64(table, offset);
}

export function writeBitmapChunk(table: TableBytes, offset: number, chunk: number): void {
  writeU64(table, offset, chunk);
}
