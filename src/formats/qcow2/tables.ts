/**
 * The two-level map of a qcow2 image (qcow2.txt, "Cluster mapping"): the L1 table, read whole
 * at open (at most 32 MiB, and only as large as the file holds), and L2 tables, one cluster
 * each, read on demand into a least-recently-used cache bounded in bytes.
 *
 * - Invariants: every L1 entry that maps part of the virtual disk was checked at open (its L2
 *   offset cluster-aligned and inside the file), so a lookup trusts it; an L2 table is a copy
 *   of the file's bytes (the image is read-only, so a cached table never goes stale).
 */
import { CorruptedImageError } from '../../block/errors.js';
import type { BlockFile } from '../../io/block-file.js';
import { entryOffset, type Qcow2Geometry } from './geometry.js';
import { LruCache } from './lru.js';

export const DEFAULT_L2_CACHE_BYTES = 4 * 1024 * 1024;

export class ClusterTables {
  private readonly l2Offsets: Float64Array;
  private readonly cache: LruCache<number, Buffer>;

  constructor(
    private readonly file: BlockFile,
    readonly geometry: Qcow2Geometry,
    l1: Buffer,
    /** Entries that map the virtual disk; those after it are never looked at. */
    usedEntries: number,
    cacheBytes: number = DEFAULT_L2_CACHE_BYTES,
  ) {
    const g = geometry;
    this.l2Offsets = new Float64Array(usedEntries);
    for (let i = 0; i < usedEntries; i++) {
      const offset = entryOffset(l1.readUInt32BE(i * 8), l1.readUInt32BE(i * 8 + 4));
      if (offset === 0) continue;
      if (offset % g.clusterSize !== 0) throw new CorruptedImageError(g.path, `L1 entry ${i}: L2 table offset ${offset} is not cluster-aligned`);
      if (offset + g.clusterSize > g.fileSize) throw new CorruptedImageError(g.path, `L1 entry ${i}: L2 table at ${offset} ends past the end of the file (${g.fileSize} bytes)`);
      this.l2Offsets[i] = offset;
    }
    this.cache = new LruCache(cacheBytes, (t) => t.length);
  }

  /** Host offset of the L2 table for L1 entry `index`; 0 when none is allocated. */
  l2Offset(index: number): number {
    return index < this.l2Offsets.length ? this.l2Offsets[index] : 0;
  }

  /** The L2 table if it is cached (no wait); undefined when it must be loaded. */
  cached(offset: number): Buffer | undefined {
    return this.cache.get(offset);
  }

  load(offset: number): Promise<Buffer> {
    return this.cache.obtain(offset, async () => {
      const table = Buffer.allocUnsafe(this.geometry.clusterSize);
      await this.file.read(table, offset);
      return table;
    });
  }

  get cacheBytes(): number {
    return this.cache.capacity;
  }
}
