/**
 * Serves reads of any offset and length from a remote object fetched in aligned blocks.
 *
 * - A block is fetched at most once at a time however many readers want it: a block being
 *   fetched is in `inflight`, and readers wait for that fetch. Adjacent missing blocks of one
 *   read are merged into one ranged request of at most `maxRequestBytes`.
 * - A request's body is kept as the pieces it arrived in (views of what the socket read): a
 *   block is the list of views of those pieces that cover it, so a byte is copied once, into
 *   the reader's buffer. Fetched blocks go into a bytes-bounded LRU cache (block-cache.ts); a
 *   failed fetch leaves nothing behind (the next read asks again) and fails every reader of its
 *   blocks with the fetch's error.
 * - Sequential reads are read ahead (readahead.ts); a failed readahead is dropped silently, the
 *   read that later needs the block fetches it again and reports the error.
 */
import { BlockCache } from './block-cache.js';
import { Readahead } from './readahead.js';

/** Fetches [offset, offset + length) as pieces, in order, `length` bytes in all. */
export type FetchRange = (offset: number, length: number) => Promise<Buffer[]>;

/** A block's bytes: views of the pieces of the request that fetched it, in order. */
export type Block = readonly Buffer[];

/** Cuts `pieces` (covering `total` bytes) into blocks of `bs` bytes (the last may be shorter). */
function cutBlocks(pieces: readonly Buffer[], count: number, bs: number, total: number): Block[] {
  const blocks: Block[] = [];
  let piece = 0;
  let within = 0;
  for (let k = 0; k < count; k++) {
    let need = Math.min(bs, total - k * bs);
    const parts: Buffer[] = [];
    while (need > 0) {
      const p = pieces[piece];
      if (!p) throw new RangeError(`a fetch returned fewer than the ${total} bytes it was asked for`);
      const n = Math.min(need, p.length - within);
      parts.push(n === p.length ? p : p.subarray(within, within + n));
      need -= n;
      within += n;
      if (within === p.length) {
        piece++;
        within = 0;
      }
    }
    blocks.push(parts);
  }
  return blocks;
}

/** Copies block bytes [from, to) (relative to the block) into `buf` at `at`. */
function copyOut(block: Block, from: number, to: number, buf: Buffer, at: number): void {
  let pos = 0;
  for (const part of block) {
    const end = pos + part.length;
    if (end > from && pos < to) {
      const a = Math.max(from, pos);
      const b = Math.min(to, end);
      part.copy(buf, at + (a - from), a - pos, b - pos);
    }
    pos = end;
    if (pos >= to) break;
  }
}

function blockLength(block: Block): number {
  let n = 0;
  for (const part of block) n += part.length;
  return n;
}

export interface BlockReaderOptions {
  size: number;
  blockSize: number;
  maxRequestBytes: number;
  cacheBytes: number;
  readaheadMaxBytes: number;
}

function ignore(): void {}

export class BlockReader {
  private readonly cache: BlockCache;
  private readonly inflight = new Map<number, Promise<Block>>();
  private readonly readahead: Readahead;
  private readonly maxBlocksPerRequest: number;
  /** Ranged requests started, and the blocks they covered (readahead included). */
  readonly stats = { fetches: 0, blocksFetched: 0, readaheadFetches: 0 };

  constructor(
    private readonly fetch: FetchRange,
    private readonly o: BlockReaderOptions,
  ) {
    this.cache = new BlockCache(o.cacheBytes);
    this.readahead = new Readahead(o.blockSize, o.readaheadMaxBytes, o.size, Math.max(o.blockSize, Math.floor(o.maxRequestBytes / o.blockSize) * o.blockSize));
    this.maxBlocksPerRequest = Math.max(1, Math.floor(o.maxRequestBytes / o.blockSize));
  }

  async read(buf: Buffer, offset: number): Promise<void> {
    if (buf.length === 0) return;
    const bs = this.o.blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.floor((offset + buf.length - 1) / bs);
    const ahead = this.readahead.onRead(offset, buf.length);
    let blocks: Array<Promise<Block>>;
    if (ahead) {
      this.stats.readaheadFetches++;
      const aheadFirst = Math.floor(ahead.offset / bs);
      const aheadLast = Math.floor((ahead.offset + ahead.length - 1) / bs);
      if (aheadFirst <= last + 1) {
        // The readahead continues this read: one run, so that the read's missing blocks and the
        // blocks ahead go out in the same requests.
        const all = this.want(first, Math.max(last, aheadLast));
        all.slice(last - first + 1).forEach((p) => p.catch(ignore));
        blocks = all.slice(0, last - first + 1);
      } else {
        blocks = this.want(first, last);
        this.want(aheadFirst, aheadLast).forEach((p) => p.catch(ignore));
      }
    } else blocks = this.want(first, last);
    const end = offset + buf.length;
    await Promise.all(
      blocks.map(async (pending, i) => {
        const block = await pending;
        const blockStart = (first + i) * bs;
        const from = Math.max(offset, blockStart);
        const to = Math.min(end, blockStart + blockLength(block));
        copyOut(block, from - blockStart, to - blockStart, buf, from - offset);
      }),
    );
  }

  /** Drops every cached block (after the object was found to have changed). */
  forget(): void {
    this.cache.clear();
  }

  /** A promise of each block first..last: cached, being fetched, or fetched now (missing runs merged). */
  private want(first: number, last: number): Array<Promise<Block>> {
    const lastBlock = Math.ceil(this.o.size / this.o.blockSize) - 1;
    const stop = Math.min(last, lastBlock);
    const out: Array<Promise<Block>> = [];
    let runStart = -1;
    for (let i = first; i <= stop + 1; i++) {
      const have = i <= stop ? this.known(i) : undefined;
      const missing = i <= stop && !have;
      if (missing && runStart < 0) runStart = i;
      if (!missing && runStart >= 0) {
        this.fetchRun(runStart, i - runStart);
        for (let j = runStart; j < i; j++) out.push(this.inflight.get(j)!);
        runStart = -1;
      }
      if (have) out.push(have);
    }
    return out;
  }

  private known(index: number): Promise<Block> | undefined {
    const cached = this.cache.get(index);
    if (cached) return Promise.resolve(cached);
    return this.inflight.get(index);
  }

  /** Starts requests for `count` missing blocks from `start`, at most maxBlocksPerRequest each. */
  private fetchRun(start: number, count: number): void {
    for (let at = start; at < start + count; at += this.maxBlocksPerRequest) {
      this.fetchBlocks(at, Math.min(this.maxBlocksPerRequest, start + count - at));
    }
  }

  private fetchBlocks(start: number, count: number): void {
    const bs = this.o.blockSize;
    const offset = start * bs;
    const length = Math.min(this.o.size, (start + count) * bs) - offset;
    this.stats.fetches++;
    this.stats.blocksFetched += count;
    const whole = this.fetch(offset, length).then((pieces) => cutBlocks(pieces, count, bs, length));
    for (let k = 0; k < count; k++) {
      const index = start + k;
      const block = whole.then((blocks) => blocks[k]);
      block.catch(ignore);
      this.inflight.set(index, block);
      block.then(
        (data) => {
          if (this.inflight.get(index) === block) this.inflight.delete(index);
          this.cache.set(index, data);
        },
        () => {
          if (this.inflight.get(index) === block) this.inflight.delete(index);
        },
      );
    }
  }
}
