/**
 * Compressed qcow2 clusters (qcow2.txt, "Compressed Clusters Descriptor"): where the
 * compressed bytes lie, and the cluster they decode to, kept in a small cache.
 *
 * - The descriptor packs a host byte offset into its low x = 62 - (cluster_bits - 8) bits and,
 *   above it up to bit 61, the number of 512-byte sectors the data takes beyond the one holding
 *   its first byte. The span read is those sectors, from the offset on: at most two clusters
 *   and a sector, so a hostile descriptor cannot make a large read or allocation.
 * - The span must lie inside the file rounded up to a whole sector (QEMU ends a file with a
 *   compressed cluster on a sector boundary; a span past that is corruption).
 * - A cluster must decode to exactly cluster_size bytes (deflate or zstd, one type per image);
 *   anything else is CorruptedImageError naming the cluster.
 * - Decompressed clusters are cached by host offset (a sequential reader takes one cluster in
 *   several requests); concurrent misses of one cluster decode it once.
 */
import { CorruptedImageError } from '../../block/errors.js';
import type { BlockFile } from '../../io/block-file.js';
import { CodecError, type ChunkDecoder } from '../../io/codecs/codec.js';
import { rawDeflateDecoder } from '../../io/codecs/deflate-raw.js';
import { zstdDecoder } from '../../io/codecs/zstd.js';
import type { CompressionType } from './features.js';
import type { Qcow2Geometry } from './geometry.js';
import { LruCache } from './lru.js';

const SECTOR = 512;
export const DEFAULT_CLUSTER_CACHE_BYTES = 2 * 1024 * 1024;

export interface CompressedSpan {
  readonly offset: number;
  readonly length: number;
}

/** Where the compressed bytes of an L2 entry (given as its 32-bit halves, bit 62 set) lie. */
export function compressedSpan(g: Qcow2Geometry, hi: number, lo: number, guest: number): CompressedSpan {
  const offsetBits = 62 - (g.clusterBits - 8);
  const hiOffsetBits = offsetBits - 32;
  const offset = (hi & (2 ** hiOffsetBits - 1)) * 0x1_0000_0000 + (lo >>> 0);
  const sectors = (hi >>> hiOffsetBits) & (2 ** (62 - offsetBits) - 1);
  const length = (sectors + 1) * SECTOR - (offset % SECTOR);
  const limit = Math.ceil(g.fileSize / SECTOR) * SECTOR;
  if (offset === 0 || offset + length > limit) {
    throw new CorruptedImageError(g.path, `L2 entry for guest offset ${guest}: compressed cluster at ${offset} (${length} bytes) is past the end of the file (${g.fileSize} bytes)`);
  }
  return { offset, length };
}

export class CompressedClusters {
  private readonly cache: LruCache<number, Buffer>;
  private readonly decoder: ChunkDecoder;

  constructor(
    private readonly file: BlockFile,
    private readonly geometry: Qcow2Geometry,
    compression: CompressionType,
    cacheBytes: number = DEFAULT_CLUSTER_CACHE_BYTES,
  ) {
    this.decoder = compression === 'zstd' ? zstdDecoder : rawDeflateDecoder;
    this.cache = new LruCache(cacheBytes, (c) => c.length);
  }

  /** The decoded cluster whose L2 entry is hi/lo (`guest`: its guest offset, for messages). */
  cluster(hi: number, lo: number, guest: number): Promise<Buffer> {
    const span = compressedSpan(this.geometry, hi, lo, guest);
    return this.cache.obtain(span.offset, () => this.decode(span, guest));
  }

  private async decode(span: CompressedSpan, guest: number): Promise<Buffer> {
    const g = this.geometry;
    const input = Buffer.allocUnsafe(span.length);
    await this.file.read(input, span.offset);
    const output = Buffer.alloc(g.clusterSize);
    let n: number;
    try {
      n = await this.decoder.decode(input, output);
    } catch (err) {
      if (!(err instanceof CodecError)) throw err;
      throw new CorruptedImageError(g.path, `compressed cluster for guest offset ${guest} (at ${span.offset}) does not decode: ${err.message}`);
    }
    if (n !== g.clusterSize) {
      throw new CorruptedImageError(g.path, `compressed cluster for guest offset ${guest} (at ${span.offset}) decodes to ${n} bytes, not ${g.clusterSize}`);
    }
    return output;
  }
}
