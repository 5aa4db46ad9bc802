/**
 * `check`: every rule open applies (load.ts), plus what open leaves for later: every bitmap of
 * every partly written chunk and the metadata chunk; then leaked chunks (in the file, referenced
 * by nothing: harmless, left by a crash or by freed chunks) and chunks referenced twice.
 *
 * - Never throws for a broken image: each problem becomes one line in `errors`, naming what and
 *   where. Failing to read the file at all (missing, unreadable) still throws.
 * - `clean` means no errors and no leaks; `stackbd check` exits 0 when clean, 1 when only leaks,
 *   2 when anything is corrupt.
 */
import type { BlockFile } from '../../io/block-file.js';
import { openFdFile } from '../../io/fd-file.js';
import { countSectorStates, emptyStateCounts, firstInvalidSector, type SectorStateCounts } from './bitmap.js';
import { ChunkStatus, dataEntryOffset, bitmapEntryOffset } from './layout.js';
import { loadMap, readLogicalChunk, type LoadedMap } from './load.js';
import { decodeMetadata } from './metadata.js';
import { CollectingSink, hex } from './problems.js';
import { bitmapChunkAt, entryStatus } from './table.js';

export interface ChunkStateCounts {
  neverWritten: number;
  full: number;
  partial: number;
  discarded: number;
}

export interface AsifCheckReport {
  file: string;
  clean: boolean;
  errors: string[];
  leakedChunks: number[];
  doubleReferenced: number[];
  /** States of the chunks of the virtual disk (the metadata chunk lies beyond it). */
  chunkStates: ChunkStateCounts;
  /** States of the sectors of every partly written chunk, the metadata chunk included. */
  bitmapSectorStates: SectorStateCounts;
}

export async function checkAsif(path: string): Promise<AsifCheckReport> {
  const file = await openFdFile(path, { readOnly: true });
  try {
    return await checkAsifFile(file);
  } finally {
    await file.close();
  }
}

export async function checkAsifFile(file: BlockFile): Promise<AsifCheckReport> {
  const sink = new CollectingSink();
  const report: AsifCheckReport = {
    file: file.path,
    clean: false,
    errors: sink.errors,
    leakedChunks: [],
    doubleReferenced: [],
    chunkStates: { neverWritten: 0, full: 0, partial: 0, discarded: 0 },
    bitmapSectorStates: emptyStateCounts(),
  };
  const map = await loadMap(file, sink);
  if (map) {
    countChunkStates(map, report.chunkStates);
    await checkBitmaps(file, map, sink, report.bitmapSectorStates);
    const metaWhere = `metadata chunk (logical chunk ${map.header.metadataChunk})`;
    const meta = await readLogicalChunk(file, map, map.header.metadataChunk, metaWhere, sink);
    if (meta) decodeMetadata(meta, metaWhere, sink);
    for (let c = map.header.firstDataChunk; c < map.fileChunks; c++) {
      if (map.references[c] === 0) report.leakedChunks.push(c);
    }
    report.doubleReferenced.push(...map.doubleReferenced);
  }
  report.clean = report.errors.length === 0 && report.leakedChunks.length === 0;
  return report;
}

function countChunkStates(map: LoadedMap, counts: ChunkStateCounts): void {
  const geo = map.geometry;
  const deviceChunks = Math.ceil((map.header.sectorCount * geo.blockSize) / geo.chunkSize);
  for (let t = 0; t * geo.chunksPerTable < deviceChunks; t++) {
    const first = t * geo.chunksPerTable;
    const n = Math.min(geo.chunksPerTable, deviceChunks - first);
    const table = map.tables.get(t);
    if (!table) {
      counts.neverWritten += n;
      continue;
    }
    for (let k = 0; k < n; k++) {
      switch (entryStatus(table, dataEntryOffset(geo, k))) {
        case ChunkStatus.full:
          counts.full++;
          break;
        case ChunkStatus.partial:
          counts.partial++;
          break;
        case ChunkStatus.discarded:
          counts.discarded++;
          break;
        default:
          counts.neverWritten++;
      }
    }
  }
}

/** Reads the bitmap chunk of every group with partly written chunks, once, and checks their slices. */
async function checkBitmaps(file: BlockFile, map: LoadedMap, sink: CollectingSink, counts: SectorStateCounts): Promise<void> {
  const geo = map.geometry;
  const image = Buffer.alloc(geo.chunkSize);
  for (const [t, table] of map.tables) {
    for (let g = 0; g < geo.groupsPerTable; g++) {
      const bitmap = bitmapChunkAt(table, bitmapEntryOffset(geo, g));
      if (bitmap === 0 || bitmap < map.header.firstDataChunk || bitmap >= map.fileChunks) continue;
      let loaded = false;
      for (let j = 0; j < geo.entriesPerGroup; j++) {
        const k = g * geo.entriesPerGroup + j;
        if (entryStatus(table, dataEntryOffset(geo, k)) !== ChunkStatus.partial) continue;
        if (!loaded) {
          await file.read(image, bitmap * geo.chunkSize);
          loaded = true;
        }
        const slice = image.subarray(j * geo.sliceBytes, (j + 1) * geo.sliceBytes);
        countSectorStates(slice, counts);
        const bad = firstInvalidSector(slice);
        if (bad >= 0) {
          const logical = t * geo.chunksPerTable + k;
          sink.corrupt(
            `bitmap of logical chunk ${logical} (bitmap chunk ${bitmap}, byte ${hex(bitmap * geo.chunkSize + j * geo.sliceBytes + (bad >> 2))}) has the invalid state 11 for sector ${bad}`,
          );
        }
      }
    }
  }
}
