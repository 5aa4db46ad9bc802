/**
 * ASIF geometry: the constants of the format and every size derived from the header's block
 * size, chunk size and capacity (spec §1–§3). Pure arithmetic, no I/O.
 *
 * - Stores: nothing; a `Geometry` is computed once per image and shared by every module.
 * - Terms: a *logical chunk* L is a chunk-sized piece of the virtual disk (and of the capacity
 *   beyond it, where the metadata chunk lives); a *physical chunk* is a chunk-sized piece of
 *   the file. Table `t = floor(L / chunksPerTable)` maps L at index `k = L mod chunksPerTable`,
 *   in group `g = floor(k / N)`, position `j = k mod N` inside the group.
 * - Invariants: every size here is an exact integer below 2^53; a group's bitmap fills exactly
 *   one chunk (N chunks × sectorsPerChunk × 2 bits = chunkSize bytes), so a chunk's bitmap
 *   slice is `sliceBytes = chunkSize / (N)` bytes at `j * sliceBytes` in its group's bitmap chunk.
 */

/** 'shdw', big-endian, at byte 0. */
export const ASIF_MAGIC = 0x73686477;
export const ASIF_VERSION = 1;
/** Bytes of the header we read and write; Apple's header size field says the same. */
export const HEADER_BYTES = 0x200;
/** 'meta', at the start of the metadata chunk. */
export const META_MAGIC = 0x6d657461;
export const META_VERSION = 1;
/** Where the plist starts inside the metadata chunk (Apple's meta header size). */
export const META_HEADER_BYTES = 0x200;

/** The 2-bit status of a data entry (bits 63–62). */
export const ChunkStatus = {
  neverWritten: 0b00,
  full: 0b01,
  discarded: 0b10,
  partial: 0b11,
} as const;
export type ChunkStatus = (typeof ChunkStatus)[keyof typeof ChunkStatus];

/** The 2-bit state of one sector in a bitmap. `reserved` (10) reads as not written; `invalid` (11) is corrupt. */
export const SectorState = {
  notWritten: 0b00,
  written: 0b01,
  reserved: 0b10,
  invalid: 0b11,
} as const;

/** Apple's choices: chunk size and map capacity per block size (4096 is ours, spec §10). */
export const STANDARD_LAYOUT = {
  512: { chunkSize: 0x100000, maxSectorCount: 2 ** 43 },
  4096: { chunkSize: 0x100000, maxSectorCount: 2 ** 40 },
} as const;
export type StandardBlockSize = keyof typeof STANDARD_LAYOUT;

/** The largest chunk size this engine accepts: a table or bitmap chunk is held in memory whole. */
export const MAX_CHUNK_SIZE = 64 * 1024 * 1024;

export interface Geometry {
  readonly blockSize: number;
  readonly chunkSize: number;
  readonly maxSectorCount: number;
  readonly sectorsPerChunk: number;
  /** N: data entries per group. */
  readonly entriesPerGroup: number;
  /** S: bytes per group in a table (N data entries + 1 bitmap entry). */
  readonly groupBytes: number;
  /** G: groups per table. */
  readonly groupsPerTable: number;
  /** G × N: logical chunks one table maps. */
  readonly chunksPerTable: number;
  /** D: logical bytes one table maps. */
  readonly tableSpan: number;
  /** T: entries in a directory. */
  readonly directoryEntries: number;
  /** 8 + 8 × T. */
  readonly directoryBytes: number;
  /** Bitmap bytes of one chunk (2 bits per sector). */
  readonly sliceBytes: number;
  /** Logical chunks below capacity. */
  readonly capacityChunks: number;
}

/**
 * Derives the geometry. The caller has checked that the values are sane (see header.ts): block
 * size a multiple of 512, chunk size a multiple of the block size holding at least one group
 * and a whole number of bitmap bytes per chunk, capacity below 2^53 bytes.
 */
export function deriveGeometry(blockSize: number, chunkSize: number, maxSectorCount: number): Geometry {
  const sectorsPerChunk = chunkSize / blockSize;
  const entriesPerGroup = 4 * blockSize;
  const groupBytes = 8 * (entriesPerGroup + 1);
  const groupsPerTable = Math.floor(chunkSize / groupBytes);
  const chunksPerTable = groupsPerTable * entriesPerGroup;
  const tableSpan = chunksPerTable * chunkSize;
  const capacityBytes = maxSectorCount * blockSize;
  const directoryEntries = Math.ceil(capacityBytes / tableSpan);
  return {
    blockSize,
    chunkSize,
    maxSectorCount,
    sectorsPerChunk,
    entriesPerGroup,
    groupBytes,
    groupsPerTable,
    chunksPerTable,
    tableSpan,
    directoryEntries,
    directoryBytes: 8 + 8 * directoryEntries,
    sliceBytes: sectorsPerChunk / 4,
    capacityChunks: Math.ceil(capacityBytes / chunkSize),
  };
}

/** Byte offset inside a table of the data entry of in-table chunk index k (entry index k + g). */
export function dataEntryOffset(geo: Geometry, k: number): number {
  return 8 * (k + Math.floor(k / geo.entriesPerGroup));
}

/** Byte offset inside a table of group g's bitmap entry (index N of the group). */
export function bitmapEntryOffset(geo: Geometry, g: number): number {
  return geo.groupBytes * g + 8 * geo.entriesPerGroup;
}

/** Where the directories and the first usable physical chunk lie for a new image. */
export interface DirectoryPlacement {
  readonly offsets: readonly [number, number];
  /** Physical chunks below this hold the header and the directories. */
  readonly firstDataChunk: number;
}

/**
 * Apple places directory A right after the 512-byte header and directory B after A, rounded up
 * to the block size (0x200 and 0x41400 at 512-byte blocks). At 4096-byte blocks we start A at
 * 4096 so that every directory write is block aligned.
 */
export function placeDirectories(geo: Geometry): DirectoryPlacement {
  const a = Math.max(HEADER_BYTES, geo.blockSize);
  const b = a + roundUp(geo.directoryBytes, geo.blockSize);
  return { offsets: [a, b], firstDataChunk: Math.ceil((b + geo.directoryBytes) / geo.chunkSize) };
}

export function roundUp(value: number, unit: number): number {
  return Math.ceil(value / unit) * unit;
}

/** The largest block count an image can have: the device must end below the metadata chunk. */
export function maxBlockCount(geo: Geometry, metadataChunk: number): number {
  return Math.min(geo.maxSectorCount, metadataChunk * geo.sectorsPerChunk);
}
