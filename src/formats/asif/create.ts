/**
 * New blank ASIF images, laid out like Apple's (spec §8): chunk 0 holds the header and both
 * directories (A with sequence 0, B with sequence 1, both pointing at one table); then the
 * table that maps the metadata chunk, the metadata chunk itself, and the bitmap chunk of the
 * metadata chunk's group. The metadata chunk is mapped with status 11 and a bitmap marking the
 * sectors that hold the `meta` header and the plist.
 *
 * - Invariants: at 512-byte blocks with the standard geometry the bytes equal an Apple-made
 *   blank image except the GUID, the stable uuid and the sector count; a layer differs only by
 *   its parent UUID (0x50) and the `layer type` key (spec §10). Nothing is written before every
 *   argument has been checked.
 */
import { v4 as uuidV4 } from 'uuid';
import { InvalidBlockCountError, RequestError } from '../../block/errors.js';
import type { BlockFile } from '../../io/block-file.js';
import { writeNewFile } from '../../io/new-file.js';
import type { LayerType, ParentPin } from '../layer.js';
import { markSectorsWritten } from './bitmap.js';
import { encodeDirectory } from './directory.js';
import { encodeHeader, uuidToBytes } from './header.js';
import {
  ChunkStatus,
  STANDARD_LAYOUT,
  deriveGeometry,
  maxBlockCount,
  placeDirectories,
  type Geometry,
} from './layout.js';
import { encodeMetadata } from './metadata.js';
import { addressOf, writeBitmapChunk, writeEntry } from './table.js';

export interface CreateAsifOptions {
  blockCount: number;
  blockSize?: 512 | 4096;
  overwrite?: boolean;
  layerType?: LayerType | null;
  parentUUID?: string | null;
  /** For a layer over a RAW, foreign or remote base: what identifies that base (metadata.ts). */
  parentPin?: ParentPin | null;
  /** For a cache layer: the most bytes of data it keeps (least recently used chunks go first). */
  cacheLimit?: number | null;
}

/**
 * Geometry other than Apple's, for tests and tools: a small chunk size keeps test images tiny.
 * The chunk size must be a multiple of 4 blocks holding at least one table group.
 */
export interface AsifLayoutOptions {
  chunkSize?: number;
  maxSectorCount?: number;
}

/** The checked plan of a new image. */
interface BlankImage {
  readonly geometry: Geometry;
  readonly blockCount: number;
  readonly metadataChunk: number;
  readonly layerType: LayerType | null;
  readonly parentUUID: Uint8Array;
  readonly parentPin: ParentPin | null;
  readonly cacheLimit: number | null;
}

export async function createAsif(path: string, options: CreateAsifOptions & AsifLayoutOptions): Promise<void> {
  const plan = planBlankImage(path, options);
  await writeNewFile(path, options.overwrite ?? false, (file) => writeBlankImage(file, plan));
}

/** Writes a new image into an empty BlockFile (tests use memory and recording files). */
export async function createAsifFile(file: BlockFile, options: CreateAsifOptions & AsifLayoutOptions): Promise<void> {
  await writeBlankImage(file, planBlankImage(file.path, options));
}

/** The largest block count a new image of this block size (and layout) can have. */
export function asifCapacity(blockSize: 512 | 4096, layout: AsifLayoutOptions = {}): number {
  const geo = geometryFor(blockSize, layout);
  return maxBlockCount(geo, geo.capacityChunks - 1);
}

function geometryFor(blockSize: number, layout: AsifLayoutOptions): Geometry {
  if (blockSize !== 512 && blockSize !== 4096) {
    throw new RequestError('EINVAL', `block size ${blockSize} is not supported (512 or 4096)`);
  }
  const standard = STANDARD_LAYOUT[blockSize];
  const chunkSize = layout.chunkSize ?? standard.chunkSize;
  const maxSectorCount = layout.maxSectorCount ?? standard.maxSectorCount;
  const sectorsPerChunk = chunkSize / blockSize;
  if (!Number.isInteger(sectorsPerChunk) || sectorsPerChunk % 4 !== 0 || chunkSize < 8 * (4 * blockSize + 1)) {
    throw new RequestError('EINVAL', `chunk size ${chunkSize} does not suit ${blockSize}-byte blocks`);
  }
  if (!Number.isSafeInteger(maxSectorCount * blockSize) || maxSectorCount % sectorsPerChunk !== 0 || maxSectorCount < 2 * sectorsPerChunk) {
    throw new RequestError('EINVAL', `capacity of ${maxSectorCount} sectors is not a whole number of chunks`);
  }
  return deriveGeometry(blockSize, chunkSize, maxSectorCount);
}

function planBlankImage(path: string, options: CreateAsifOptions & AsifLayoutOptions): BlankImage {
  const geometry = geometryFor(options.blockSize ?? 512, options);
  const metadataChunk = geometry.capacityChunks - 1;
  const max = maxBlockCount(geometry, metadataChunk);
  const { blockCount } = options;
  if (!Number.isSafeInteger(blockCount) || blockCount <= 0 || blockCount > max) {
    const bs = geometry.blockSize;
    throw new InvalidBlockCountError(
      path,
      `${blockCount} blocks of ${bs} bytes (${blockCount * bs} bytes) is not a size ASIF can hold: 1 to ${max} blocks (${max * bs} bytes)`,
    );
  }
  let parentUUID: Uint8Array = new Uint8Array(16);
  if (options.parentUUID) {
    const bytes = uuidToBytes(options.parentUUID);
    if (!bytes) throw new RequestError('EINVAL', `parent UUID ${JSON.stringify(options.parentUUID)} is not a UUID`);
    parentUUID = bytes;
  }
  if (options.parentPin && options.parentUUID) {
    throw new RequestError('EINVAL', 'a layer records either the UUID of an ASIF parent or the pin of another parent, not both');
  }
  const cacheLimit = options.cacheLimit ?? null;
  if (cacheLimit !== null) {
    if (options.layerType !== 'cache') throw new RequestError('EINVAL', 'only a cache layer takes a cache limit');
    if (!Number.isSafeInteger(cacheLimit) || cacheLimit < geometry.chunkSize) {
      throw new RequestError('EINVAL', `a cache limit of ${cacheLimit} bytes is less than one ${geometry.chunkSize}-byte chunk`);
    }
  }
  return { geometry, blockCount, metadataChunk, layerType: options.layerType ?? null, parentUUID, parentPin: options.parentPin ?? null, cacheLimit };
}

async function writeBlankImage(file: BlockFile, plan: BlankImage): Promise<void> {
  const geo = plan.geometry;
  const C = geo.chunkSize;
  const placement = placeDirectories(geo);
  const tableChunk = placement.firstDataChunk;
  const metaChunk = tableChunk + 1;
  const bitmapChunk = tableChunk + 2;
  const meta = addressOf(geo, plan.metadataChunk);

  const header = encodeHeader({
    geometry: geo,
    sectorCount: plan.blockCount,
    directoryOffsets: placement.offsets,
    metadataChunk: plan.metadataChunk,
    guid: uuidToBytes(uuidV4()) as Uint8Array,
    parentUUID: plan.parentUUID,
  });
  const tables = new Float64Array(geo.directoryEntries);
  tables[meta.table] = tableChunk;

  const table = Buffer.alloc(C);
  writeEntry(table, meta.entryOffset, ChunkStatus.partial, metaChunk);
  writeBitmapChunk(table, meta.bitmapEntryOffset, bitmapChunk);

  const metadata = encodeMetadata({ stableUUID: uuidV4(), layerType: plan.layerType, parentPin: plan.parentPin, cacheLimit: plan.cacheLimit });
  const slice = new Uint8Array(geo.sliceBytes);
  markSectorsWritten(slice, 0, Math.ceil(metadata.length / geo.blockSize));

  await file.write(header, 0);
  await file.write(encodeDirectory(0n, tables), placement.offsets[0]);
  await file.write(encodeDirectory(1n, tables), placement.offsets[1]);
  // Only the sectors that hold something are written: the rest of each chunk stays a hole.
  await writeSectorsOf(file, table, tableChunk * C, [meta.entryOffset, meta.bitmapEntryOffset], geo.blockSize);
  await file.write(metadata, metaChunk * C);
  await file.write(slice, bitmapChunk * C + meta.sliceOffset);
  await file.truncate((bitmapChunk + 1) * C);
  await file.sync();
}

async function writeSectorsOf(file: BlockFile, chunk: Buffer, position: number, offsets: readonly number[], blockSize: number): Promise<void> {
  const sectors = new Set(offsets.map((o) => Math.floor(o / blockSize)));
  for (const s of sectors) await file.write(chunk.subarray(s * blockSize, (s + 1) * blockSize), position + s * blockSize);
}
