/**
 * Opening qcow2 images (QEMU's format, versions 2 and 3) as read-only base layers. The order of
 * the checks matters: the header's fields, then its extensions, then the feature bits (so an
 * encrypted or unknown image is refused by name before its layout is judged), then the layout,
 * the L1 table, and last the backing chain.
 */
import { CorruptedImageError, IncompatibleStackingError } from '../../block/errors.js';
import type { BlockFile } from '../../io/block-file.js';
import { openFdFile } from '../../io/fd-file.js';
import { fileKey, openBacking, type ChainContext } from './backing.js';
import { CompressedClusters, DEFAULT_CLUSTER_CACHE_BYTES } from './compressed.js';
import { parseExtensions } from './extensions.js';
import { checkFeatures } from './features.js';
import { geometryOf } from './geometry.js';
import { checkLayout, HEADER_PROBE_BYTES, parseHeader } from './header.js';
import { Qcow2Image, qcow2DeviceSize } from './image.js';
import { ClusterTables, DEFAULT_L2_CACHE_BYTES } from './tables.js';

export { Qcow2Image } from './image.js';
export { MAX_BACKING_DEPTH, type BackingLink } from './backing.js';

export interface Qcow2OpenOptions {
  /** Refuse an image that has a backing file instead of opening its chain. */
  noBacking?: boolean;
  /** Budget of the L2 table cache of each image of the chain (default 4 MiB). */
  l2CacheBytes?: number;
  /** Budget of the decompressed cluster cache of each image of the chain (default 2 MiB). */
  clusterCacheBytes?: number;
}

/** Opens a qcow2 image read-only, with its backing chain. */
export async function openQcow2(path: string, options: Qcow2OpenOptions = {}): Promise<Qcow2Image> {
  return openInChain(path, options, null);
}

async function openInChain(path: string, options: Qcow2OpenOptions, chain: ChainContext | null): Promise<Qcow2Image> {
  const file = await openFdFile(path, { readOnly: true });
  try {
    return await openQcow2File(file, options, chain);
  } catch (err) {
    await file.close();
    throw err;
  }
}

async function readAt(file: BlockFile, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  await file.read(buf, offset);
  return buf;
}

/**
 * Opens a qcow2 image on any BlockFile (tests use files in memory); the caller closes the file
 * if this throws. `chain` is set when the image is a backing file of another.
 */
export async function openQcow2File(file: BlockFile, options: Qcow2OpenOptions = {}, chain: ChainContext | null = null): Promise<Qcow2Image> {
  const path = file.path;
  const fileSize = await file.size();
  const header = parseHeader(await readAt(file, 0, Math.min(HEADER_PROBE_BYTES, fileSize)), path, fileSize);
  const areaEnd = Math.min(header.clusterSize, fileSize);
  const extensions = parseExtensions(await readAt(file, header.headerLength, Math.max(0, areaEnd - header.headerLength)), path, header.headerLength);
  const compression = checkFeatures(header, extensions, path);
  checkLayout(header, path, fileSize);

  const geometry = geometryOf(header, path, fileSize);
  const usedL1 = Math.ceil(qcow2DeviceSize(header.virtualSize) / geometry.l2Span);
  const l1 = await readAt(file, header.l1TableOffset, usedL1 * 8);
  const tables = new ClusterTables(file, geometry, l1, usedL1, options.l2CacheBytes ?? DEFAULT_L2_CACHE_BYTES);
  const compressed = new CompressedClusters(file, geometry, compression, options.clusterCacheBytes ?? DEFAULT_CLUSTER_CACHE_BYTES);

  let backing = null;
  if (header.backingFileOffset !== 0) {
    const raw = await readAt(file, header.backingFileOffset, header.backingFileSize);
    if (raw.includes(0)) throw new CorruptedImageError(path, 'the backing file name contains a NUL byte');
    const name = raw.toString('utf8');
    if (options.noBacking) {
      throw new IncompatibleStackingError(path, `the image has a backing file (${name}) and backing files were refused (--no-backing)`);
    }
    const st = await file.stat?.();
    const here: ChainContext = chain ?? { depth: 0, seen: new Set(st ? [fileKey(st.device, st.inode)] : []) };
    backing = await openBacking(path, name, extensions.backingFormat, here, (backingPath, next) => openInChain(backingPath, options, next));
  }
  return new Qcow2Image({ file, header, compression, tables, compressed, backing });
}
