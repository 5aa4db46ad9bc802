/**
 * Reads an image's map from disk and applies the rules of spec §2, §4 and §5: the header, both
 * directories, every table of the active directory, and the references they make.
 *
 * - Stores: nothing of its own; returns the header, the active directory's table pointers, the
 *   tables (their exact on-disk bytes, held as pages: paged-table.ts) and a reference count
 *   per physical chunk.
 * - Rules: the active directory is the one with the higher sequence (equal sequences are
 *   corrupt); every pointer (table, data chunk, bitmap chunk) lies after the header area and
 *   inside the file, and no physical chunk is referenced twice; entries have zero reserved
 *   bits, status 00/10 carry chunk 0 and 01/11 a real chunk; a group with a status-11 chunk has
 *   a bitmap chunk; nothing is mapped beyond the capacity.
 * - Bitmaps are not read here (they can be far larger than the tables): the image validates a
 *   slice when it first loads it, and check reads them all.
 */
import type { BlockFile } from '../../io/block-file.js';
import { activeCopy, decodeDirectory } from './directory.js';
import { decodeHeader, validateHeader, type AsifHeader } from './header.js';
import { firstInvalidSector, isSectorWritten } from './bitmap.js';
import { ChunkStatus, HEADER_BYTES, bitmapEntryOffset, type Geometry } from './layout.js';
import { PagedTable, type TableBytes } from './paged-table.js';
import { hex, type ProblemSink } from './problems.js';
import { addressOf, bitmapChunkAt, entryChunk, entryReserved, entryStatus } from './table.js';

export interface LoadedMap {
  readonly header: AsifHeader;
  readonly geometry: Geometry;
  readonly fileSize: number;
  /** Physical chunks the file holds, counting a partial last one. */
  readonly fileChunks: number;
  readonly active: 0 | 1;
  readonly sequences: readonly [bigint, bigint];
  /** The active directory: physical chunk of each table, 0 when none. */
  readonly tableChunks: Float64Array;
  /** The tables that loaded, by table index. */
  readonly tables: Map<number, PagedTable>;
  /** How many valid references each physical chunk has (saturating at 255). */
  readonly references: Uint8Array;
  /** Chunks referenced more than once, each listed once. */
  readonly doubleReferenced: number[];
}

/** Bytes of a table read at once while loading. */
const TABLE_READ_BYTES = 64 * 1024;

export async function loadMap(file: BlockFile, sink: ProblemSink): Promise<LoadedMap | null> {
  const fileSize = await file.size();
  const first = Buffer.alloc(HEADER_BYTES);
  await file.read(first, 0);
  const header = validateHeader(decodeHeader(first), fileSize, sink);
  if (!header) return null;
  const geo = header.geometry;
  // Only the active copy's tables are used: the other copy's sequence is all that is read of it.
  const sequences = (await Promise.all(
    header.directoryOffsets.map(async (offset) => {
      const buf = Buffer.alloc(8);
      await file.read(buf, offset);
      return buf.readBigUInt64BE(0);
    }),
  )) as [bigint, bigint];
  const active = activeCopy(sequences[0], sequences[1]);
  if (active === null) {
    sink.corrupt(`directories A (${hex(header.directoryOffsets[0])}) and B (${hex(header.directoryOffsets[1])}) both have sequence ${sequences[0]}`);
    return null;
  }
  const directory = Buffer.alloc(geo.directoryBytes);
  await file.read(directory, header.directoryOffsets[active]);
  const refs = new References(header, Math.ceil(fileSize / geo.chunkSize), sink);
  const tableChunks = decodeDirectory(directory, geo.directoryEntries).tables;
  const tables = new Map<number, PagedTable>();
  // Tables are read through one small buffer, so that loading never holds a whole table twice.
  const scratch = Buffer.alloc(Math.min(geo.chunkSize, TABLE_READ_BYTES));
  const dirName = `directory ${active === 0 ? 'A' : 'B'} (sequence ${sequences[active]})`;
  for (let t = 0; t < tableChunks.length; t++) {
    const chunk = tableChunks[t];
    if (chunk === 0) continue;
    if (!refs.take(chunk, `${dirName}, table ${t}`)) {
      tableChunks[t] = 0;
      continue;
    }
    const table = new PagedTable(geo.chunkSize);
    for (let at = 0; at < geo.chunkSize; at += scratch.length) {
      const part = scratch.subarray(0, Math.min(scratch.length, geo.chunkSize - at));
      await file.read(part, chunk * geo.chunkSize + at);
      table.load(part, at);
    }
    checkTable(geo, t, `table ${t} (chunk ${chunk})`, table, refs, sink);
    tables.set(t, table);
  }
  return {
    header,
    geometry: geo,
    fileSize,
    fileChunks: refs.fileChunks,
    active,
    sequences,
    tableChunks,
    tables,
    references: refs.counts,
    doubleReferenced: refs.doubles,
  };
}

/** Counts references and reports the bad ones. */
class References {
  readonly counts: Uint8Array;
  readonly doubles: number[] = [];

  constructor(
    private readonly header: AsifHeader,
    readonly fileChunks: number,
    private readonly sink: ProblemSink,
  ) {
    this.counts = new Uint8Array(fileChunks);
  }

  /** Records a reference; false (after reporting) when it is not usable. */
  take(chunk: number, what: string): boolean {
    const firstData = this.header.firstDataChunk;
    if (chunk < firstData) {
      this.sink.corrupt(`${what} points to chunk ${chunk}, inside the header and directories (chunks below ${firstData})`);
      return false;
    }
    if (chunk >= this.fileChunks) {
      this.sink.corrupt(`${what} points to chunk ${chunk}, past the end of the file (${this.fileChunks} chunks)`);
      return false;
    }
    const n = this.counts[chunk];
    if (n < 255) this.counts[chunk] = n + 1;
    if (n === 1) this.doubles.push(chunk);
    if (n >= 1) {
      this.sink.corrupt(`chunk ${chunk} is referenced more than once (again by ${what})`);
      return false;
    }
    return true;
  }
}

function checkTable(geo: Geometry, t: number, where: string, table: TableBytes, refs: References, sink: ProblemSink): void {
  const base = t * geo.chunksPerTable;
  for (let g = 0; g < geo.groupsPerTable; g++) {
    let partial = false;
    for (let j = 0, off = g * geo.groupBytes; j < geo.entriesPerGroup; j++, off += 8) {
      // Most entries of most tables are 00: skip them before decoding anything.
      if (table.readUInt32BE(off) === 0 && table.readUInt32BE(off + 4) === 0) continue;
      const logical = base + g * geo.entriesPerGroup + j;
      const status = entryStatus(table, off);
      const chunk = entryChunk(table, off);
      const what = `${where}, entry of logical chunk ${logical} at ${hex(off)}`;
      if (entryReserved(table, off) !== 0) {
        sink.corrupt(`${what}: reserved bits are set (${hex(entryReserved(table, off))})`);
        continue;
      }
      if (logical >= geo.capacityChunks && status !== ChunkStatus.neverWritten) {
        sink.corrupt(`${what}: maps a chunk beyond the capacity (${geo.capacityChunks} chunks)`);
        continue;
      }
      if (status === ChunkStatus.neverWritten || status === ChunkStatus.discarded) {
        if (chunk !== 0) sink.corrupt(`${what}: status ${status === 0 ? '00' : '10'} carries chunk ${chunk}`);
        continue;
      }
      if (chunk === 0) {
        sink.corrupt(`${what}: status ${status === ChunkStatus.full ? '01' : '11'} carries no chunk`);
        continue;
      }
      if (refs.take(chunk, what) && status === ChunkStatus.partial) partial = true;
    }
    const bOff = bitmapEntryOffset(geo, g);
    const bitmap = bitmapChunkAt(table, bOff);
    const what = `${where}, bitmap entry of group ${g} at ${hex(bOff)}`;
    if (bitmap !== 0) {
      refs.take(bitmap, what);
    } else if (partial) {
      sink.corrupt(`${what}: the group has partly written chunks but no bitmap chunk`);
    }
  }
}

/** Status, physical chunk and bitmap location of logical chunk L in a loaded map. */
export interface MappedChunk {
  readonly status: ChunkStatus;
  readonly chunk: number;
  /** Byte position of the chunk's bitmap slice in the file, or null. */
  readonly slicePosition: number | null;
}

export function mappedChunk(map: LoadedMap, logical: number): MappedChunk {
  const geo = map.geometry;
  const a = addressOf(geo, logical);
  const table = map.tables.get(a.table);
  if (!table) return { status: ChunkStatus.neverWritten, chunk: 0, slicePosition: null };
  const bitmap = bitmapChunkAt(table, a.bitmapEntryOffset);
  return {
    status: entryStatus(table, a.entryOffset),
    chunk: entryChunk(table, a.entryOffset),
    slicePosition: bitmap === 0 ? null : bitmap * geo.chunkSize + a.sliceOffset,
  };
}

/**
 * Reads logical chunk L whole, sectors not written as zeros; null when the chunk is not
 * allocated or its bitmap is unusable (the sink has been told).
 */
export async function readLogicalChunk(file: BlockFile, map: LoadedMap, logical: number, what: string, sink: ProblemSink, length?: number): Promise<Buffer | null> {
  const geo = map.geometry;
  // Only the first `length` bytes (whole sectors), when the caller needs no more.
  const bytes = Math.min(geo.chunkSize, Math.ceil((length ?? geo.chunkSize) / geo.blockSize) * geo.blockSize);
  const m = mappedChunk(map, logical);
  if (m.status !== ChunkStatus.full && m.status !== ChunkStatus.partial) {
    sink.corrupt(`${what} (logical chunk ${logical}) is not allocated`);
    return null;
  }
  if (m.chunk < map.header.firstDataChunk || m.chunk >= map.fileChunks) return null;
  const buf = Buffer.alloc(bytes);
  await file.read(buf, m.chunk * geo.chunkSize);
  if (m.status === ChunkStatus.full) return buf;
  if (m.slicePosition === null) return null;
  const slice = Buffer.alloc(geo.sliceBytes);
  await file.read(slice, m.slicePosition);
  const bad = firstInvalidSector(slice);
  if (bad >= 0) {
    sink.corrupt(`${what}: bitmap at ${hex(m.slicePosition)} has the invalid state 11 for sector ${bad}`);
    return null;
  }
  for (let s = 0; s < bytes / geo.blockSize; s++) {
    if (!isSectorWritten(slice, s)) buf.fill(0, s * geo.blockSize, (s + 1) * geo.blockSize);
  }
  return buf;
}
