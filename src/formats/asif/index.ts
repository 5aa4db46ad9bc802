/**
 * The ASIF engine's public face: open, create and check Apple Sparse Image Format files.
 * Everything else in this folder is an implementation detail (layout.ts lists the terms).
 */
import { CorruptedImageError } from '../../block/errors.js';
import type { BlockFile } from '../../io/block-file.js';
import { openFdFile } from '../../io/fd-file.js';
import { ChunkAllocator } from './allocator.js';
import { AsifImage, type AsifOpenOptions } from './image.js';
import { loadMap, readLogicalChunk, type LoadedMap } from './load.js';
import { decodeMetadata } from './metadata.js';
import { throwingSink, type ProblemSink } from './problems.js';

export { AsifImage, type AsifOpenOptions, type MappedRun } from './image.js';
export { createAsif, createAsifFile, asifCapacity, type CreateAsifOptions, type AsifLayoutOptions } from './create.js';
export { checkAsif, checkAsifFile, type AsifCheckReport, type ChunkStateCounts } from './check.js';
export type { SectorStateCounts } from './bitmap.js';

/** The metadata's usual size is a few KiB: read this much first, the whole chunk only when the text goes on. */
const METADATA_PREFIX = 64 * 1024;

/**
 * The metadata chunk, or as much of its start as holds the whole text (up to its NUL): an open
 * needs no 1 MiB buffer for a few KiB of XML (a server opening hundreds of images would make a
 * 1 MiB garbage buffer each).
 */
async function readMetadataChunk(file: BlockFile, map: LoadedMap, where: string, sink: ProblemSink): Promise<Buffer | null> {
  const prefix = await readLogicalChunk(file, map, map.header.metadataChunk, where, sink, METADATA_PREFIX);
  if (!prefix || prefix.length === map.geometry.chunkSize || prefix.length < 12) return prefix;
  const start = prefix.readUInt32BE(8);
  if (start < prefix.length && prefix.indexOf(0, start) >= 0) return prefix;
  return readLogicalChunk(file, map, map.header.metadataChunk, where, sink);
}

export async function openAsif(path: string, options: AsifOpenOptions = {}): Promise<AsifImage> {
  const file = await openFdFile(path, { readOnly: options.readOnly ?? false, requireLock: options.requireLock });
  try {
    return await openAsifFile(file, options);
  } catch (err) {
    await file.close();
    throw err;
  }
}

/**
 * Opens an image on any BlockFile (tests put a recording file underneath). The file's own
 * read-only flag decides the mode; the caller closes the file if this throws.
 */
export async function openAsifFile(file: BlockFile, options: Omit<AsifOpenOptions, 'readOnly'> = {}): Promise<AsifImage> {
  const sink = throwingSink(file.path);
  const map = await loadMap(file, sink);
  // A throwing sink has reported any problem already; null cannot come back from it.
  if (!map) throw new CorruptedImageError(file.path, 'the map did not load');
  const where = `metadata chunk (logical chunk ${map.header.metadataChunk})`;
  const chunk = await readMetadataChunk(file, map, where, sink);
  const metadata = chunk ? decodeMetadata(chunk, where, sink) : null;
  if (!metadata) throw new CorruptedImageError(file.path, `${where} cannot be read`);
  const leaked: number[] = [];
  for (let c = map.header.firstDataChunk; c < map.fileChunks; c++) if (map.references[c] === 0) leaked.push(c);
  const allocator = new ChunkAllocator(Math.max(map.fileChunks, map.header.firstDataChunk), leaked);
  return new AsifImage(file, map, metadata, allocator, options);
}
