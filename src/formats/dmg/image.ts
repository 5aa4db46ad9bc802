/**
 * A UDIF (.dmg) image as a read-only Layer: the base of a stack, never written.
 *
 * - Stores: nothing of its own; it reads chunks of the data fork through the chunk table.
 *   Raw chunks are read straight into the caller's buffer; compressed chunks are decoded whole
 *   into the chunk cache (chunk-cache.ts) and copied from there; zero-fill and ignore chunks
 *   read as zeros without I/O, and `map` reports them as `zero` (the rest is `data`).
 * - States: open (reads served) or closed. Writes, zeroing, discards and resizing are refused
 *   with EPERM.
 * - Invariants: no UUIDs (a child recognises this base by `pin()`: size, mtime, inode, as for
 *   RAW); block size 512; size = sectors × 512. Checksums are verified by `check`, not on
 *   reads: a blkx CRC32 covers a whole partition's decoded bytes in order, so a lazy check
 *   would CRC every chunk a read decodes (node's crc32: ~0.3 ms per MiB, more than inflating a
 *   zlib chunk, ~0.2 ms, and all of it on the event loop; raw chunks would pay it too), combine
 *   the CRCs of chunks read out of order, and could only report a mismatch after the bytes
 *   were served.
 */
import { RequestError } from '../../block/errors.js';
import { pushRun, type Run } from '../../block/runs.js';
import type { BlockFile } from '../../io/block-file.js';
import type { Layer, LayerDetails, ParentPin } from '../layer.js';
import { ChunkCache } from './chunk-cache.js';
import type { ChunkInfo, ChunkTable } from './chunk-table.js';
import { chunkName, decodeChunk } from './decode-chunk.js';
import { describeImage } from './details.js';
import { SECTOR } from './layout.js';
import type { DmgStructure } from './load.js';
import { ReadOnlyBase } from '../read-only-base.js';

/**
 * 8 MiB (8 chunks as hdiutil and `convert` cut them): a whole-disk `nbdcopy` of a 1 GiB UDZO
 * decodes each chunk exactly once at 4 MiB as at 32 MiB (the pieces of a chunk share its decode),
 * in the same time, and 4 KiB random reads are decode-bound either way; 32 MiB raised the
 * server's peak RSS from ~170 to ~200 MiB (scripts/bench/dmg-cache-size.sh).
 */
export const DMG_DEFAULT_CACHE_BYTES = 8 * 1024 * 1024;

export class DmgImage extends ReadOnlyBase implements Layer {
  readonly format = 'dmg' as const;
  protected readonly what = 'a DMG image';
  private readonly cache: ChunkCache;

  constructor(
    private readonly file: BlockFile,
    readonly structure: DmgStructure,
    readonly table: ChunkTable,
    cacheBytes = DMG_DEFAULT_CACHE_BYTES,
  ) {
    super();
    this.cache = new ChunkCache(cacheBytes);
  }

  get path(): string {
    return this.file.path;
  }

  get size(): number {
    return this.table.size;
  }

  /** Decodes started so far (each compressed chunk a read touched, once while cached). */
  get decodes(): number {
    return this.cache.decodes;
  }

  async pin(): Promise<ParentPin> {
    const st = await this.file.stat?.();
    return st ? { size: this.size, mtime: st.mtimeNs, inode: st.inode } : { size: this.size };
  }

  details(): Promise<LayerDetails> {
    return Promise.resolve(describeImage(this.structure, this.table));
  }

  /** How messages name chunk `c`. */
  nameOf(c: ChunkInfo): string {
    return chunkName(c, this.structure.partitions[c.partition]?.name ?? '');
  }

  async map(offset: number, length: number, maxRuns?: number): Promise<Run[]> {
    const runs: Run[] = [];
    const end = Math.min(offset + length, this.size);
    for (let i = offset < end ? this.table.indexAt(offset) : this.table.count; i < this.table.count; i++) {
      const c = this.table.chunk(i);
      if (c.start >= end) break;
      const state = c.kind === 'zero' || c.kind === 'ignore' ? 'zero' : 'data';
      const last = runs[runs.length - 1];
      if (maxRuns !== undefined && last !== undefined && runs.length >= maxRuns && last.state !== state) break;
      const from = Math.max(c.start, offset);
      pushRun(runs, from, Math.min(c.end, end) - from, state);
    }
    return runs;
  }

  async read(buf: Buffer, offset: number): Promise<void> {
    const end = offset + buf.length;
    if (buf.length === 0) return;
    if (offset < 0 || end > this.size) throw new RequestError('EINVAL', `${this.path}: read of ${buf.length} bytes at ${offset} is outside the ${this.size}-byte disk`);
    const work: Array<Promise<void>> = [];
    for (let i = this.table.indexAt(offset); i < this.table.count; i++) {
      const c = this.table.chunk(i);
      if (c.start >= end) break;
      const from = Math.max(c.start, offset);
      const part = buf.subarray(from - offset, Math.min(c.end, end) - offset);
      work.push(this.readChunk(c, part, from - c.start));
    }
    await Promise.all(work);
  }

  /** Fills `part` with chunk `c`'s bytes from `within` bytes into the chunk. */
  private async readChunk(c: ChunkInfo, part: Buffer, within: number): Promise<void> {
    if (c.kind === 'zero' || c.kind === 'ignore') {
      part.fill(0);
    } else if (c.kind === 'raw') {
      // A stub's last sector may be stored short: past the stored bytes the disk reads as zeros.
      const stored = Math.max(0, Math.min(part.length, c.length - within));
      if (stored > 0) await this.file.read(part.subarray(0, stored), c.position + within);
      part.fill(0, stored);
    } else {
      const decoded = await this.cache.get(c.index, () => decodeChunk(this.file, c, this.nameOf(c)));
      decoded.copy(part, 0, within, within + part.length);
    }
  }

  async close(): Promise<void> {
    this.cache.clear();
    await this.file.close();
  }
}
