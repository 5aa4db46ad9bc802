/**
 * The one device the server sees: an ordered list of layers, bottom (base) first, composed
 * here and nowhere else.
 *
 * Rules:
 * - Reads: the topmost layer whose map says `data` or `zero` answers; `absent` asks the layer
 *   below; absent everywhere, or past a lower layer's end, reads as zeros.
 * - A read that falls through the cache layer also stores what it got from below in the cache,
 *   in the background (the reply does not wait for it; cache-fill.ts: data as data, all-zero
 *   chunks as zero chunks, zeros below not copied). Only layers below the cache are read for a
 *   fill, and those never change, so a fill can never store data that a newer write above has
 *   replaced. A prefetch (NBD_CMD_CACHE) is a warm of its range (warm.ts).
 * - Writes, zeroes and trims go to the top layer only, in whole units of its request alignment
 *   (an ASIF layer's sector; a RAW file takes any byte): a write that does not cover whole
 *   units reads the rest of its first and last unit through the stack first (this is the one
 *   place that pads); aligned writes never read below; trims keep only their whole units.
 * - The top layer sets the size. A cache layer is never the top of a writable stack.
 */
import { RequestError } from '../block/errors.js';
import { pushRun, type Run } from '../block/runs.js';
import type { Layer, WriteOptions, ZeroOptions } from '../formats/layer.js';
import { padTrim, padWrite, padZero, type PaddingTarget } from './padding.js';
import { CacheFill, emptyCacheStats, type CacheStats, type StoredBytes } from './cache-fill.js';
import { warmStack } from './warm.js';

export type { CacheStats } from './cache-fill.js';

/** A run of the merged map, with the depth of the layer that supplies it (1 = top, 0 = none). */
export interface DepthRun extends Run {
  depth: number;
}

export interface StackOptions {
  /** Serve read-only even if the top layer was opened read-write. */
  readOnly?: boolean;
  /** Where cache hits and misses are counted (shared by the stacks a live snapshot makes). */
  cacheStats?: CacheStats;
  /** Called when a background cache fill fails; the read that triggered it already succeeded. */
  onCacheFillError?: (err: unknown) => void;
  /** The cache layer's fills (shared, like cacheStats, by the stacks a live snapshot makes). */
  cacheFill?: CacheFill;
}

/** Pieces of a prefetch (NBD_CMD_CACHE) read and stored at once. */
const PREFETCH_JOBS = 4;

export class Stack {
  readonly readOnly: boolean;
  private readonly cacheIndex: number;
  /** Stores what reads fetch from below the cache layer into it; null without a cache layer. */
  private readonly fill: CacheFill | null;
  readonly cacheStats: CacheStats;

  constructor(
    readonly layers: readonly Layer[],
    private readonly options: StackOptions = {},
  ) {
    if (layers.length === 0) throw new RangeError('a stack needs at least one layer');
    this.cacheIndex = layers.findIndex((l) => l.layerType === 'cache');
    const top = layers[layers.length - 1];
    this.readOnly = (options.readOnly ?? false) || top.readOnly || top.layerType === 'cache';
    this.cacheStats = options.cacheStats ?? emptyCacheStats();
    this.fill = this.cacheIndex < 0 ? null : (options.cacheFill ?? new CacheFill(layers[this.cacheIndex], this.cacheStats, options.onCacheFillError));
  }

  /** The same stack with `layer` on top; the layers below are shared, not reopened. */
  withTop(layer: Layer): Stack {
    return new Stack([...this.layers, layer], { ...this.options, cacheStats: this.cacheStats, ...(this.fill ? { cacheFill: this.fill } : {}) });
  }

  get top(): Layer {
    return this.layers[this.layers.length - 1];
  }

  get size(): number {
    return this.top.size;
  }

  get blockSize(): number {
    return this.top.blockSize;
  }

  get hasCache(): boolean {
    return this.cacheIndex >= 0;
  }

  /**
   * Fills `buf` with the stack's bytes at `offset` and returns which parts were data and which
   * were zeros (for replies that can send holes), in order and merged.
   */
  read(buf: Buffer, offset: number): Promise<Run[]> {
    const top = this.layers.length - 1;
    const layer = this.layers[top];
    // The common case, with no lists and no async frame (their garbage is most of what the
    // collector handles per request): the top layer answers the whole range in one run. A
    // cache top counts its hits and misses, so it takes the general way.
    if (top !== this.cacheIndex && offset + buf.length <= layer.size) {
      if (layer.readRuns) {
        return layer.readRuns(buf, offset).then((runs) => (runs.length === 1 && runs[0].state !== 'absent' ? runs : this.readRest(top, runs, buf, offset)));
      }
      if (top === 0) {
        return layer.map(offset, buf.length).then((runs) => {
          if (runs.length !== 1 || runs[0].state !== 'data') return this.readGeneral(buf, offset);
          return layer.read(buf, offset).then(() => runs);
        });
      }
    }
    return this.readGeneral(buf, offset);
  }

  private async readGeneral(buf: Buffer, offset: number): Promise<Run[]> {
    const found: Run[] = [];
    await this.readLevel(this.layers.length - 1, buf, offset, found);
    return mergedRuns(found);
  }

  /** The top held part of the range (`runs`, already read into `buf`): the rest comes from below. */
  private async readRest(top: number, runs: readonly Run[], buf: Buffer, offset: number): Promise<Run[]> {
    const found: Run[] = [];
    await this.readAbsentBelow(top, runs, buf, offset, found);
    return mergedRuns(found);
  }

  private async readLevel(level: number, buf: Buffer, offset: number, found: Run[]): Promise<void> {
    const layer = this.layers[level];
    const inside = Math.max(0, Math.min(buf.length, layer.size - offset));
    if (inside < buf.length) {
      // Past this layer's end: zeros, whatever lies below.
      buf.fill(0, inside);
      found.push({ offset: offset + inside, length: buf.length - inside, state: 'zero' });
    }
    if (inside === 0) return;
    if (layer.readRuns) return this.readLevelOnce(level, layer.readRuns.bind(layer), inside === buf.length ? buf : buf.subarray(0, inside), offset, found);
    const runs = await layer.map(offset, inside);
    if (level === this.cacheIndex) this.countCache(runs);
    if (runs.length === 1 && runs[0].state === 'data') {
      await layer.read(inside === buf.length ? buf : buf.subarray(0, inside), offset);
      found.push({ offset, length: inside, state: 'data' });
      return;
    }
    const work: Promise<void>[] = [];
    for (const run of runs) {
      const part = buf.subarray(run.offset - offset, run.offset - offset + run.length);
      if (run.state === 'data') {
        work.push(layer.read(part, run.offset));
        found.push({ offset: run.offset, length: run.length, state: 'data' });
      } else if (run.state === 'zero' || level === 0) {
        part.fill(0);
        found.push({ offset: run.offset, length: run.length, state: 'zero' });
      } else if (level === this.cacheIndex && !layer.readOnly) {
        work.push(this.readBelowCache(level, part, run.offset, found));
      } else {
        work.push(this.readLevel(level - 1, part, run.offset, found));
      }
    }
    await Promise.all(work);
  }

  /** A level whose layer reads and maps in one lookup; only what it does not hold is read below. */
  private async readLevelOnce(level: number, readRuns: (buf: Buffer, offset: number) => Promise<Run[]>, buf: Buffer, offset: number, found: Run[]): Promise<void> {
    const runs = await readRuns(buf, offset);
    if (level === this.cacheIndex) this.countCache(runs);
    await this.readAbsentBelow(level, runs, buf, offset, found);
  }

  /** Given what `level` holds of `buf` (already read), reads the rest from below. */
  private async readAbsentBelow(level: number, runs: readonly Run[], buf: Buffer, offset: number, found: Run[]): Promise<void> {
    const below: Promise<void>[] = [];
    for (const run of runs) {
      if (run.state !== 'absent') {
        found.push(run);
        continue;
      }
      const part = buf.subarray(run.offset - offset, run.offset - offset + run.length);
      if (level === 0) {
        part.fill(0);
        found.push({ offset: run.offset, length: run.length, state: 'zero' });
      } else if (level === this.cacheIndex && !this.layers[level].readOnly) {
        below.push(this.readBelowCache(level, part, run.offset, found));
      } else {
        below.push(this.readLevel(level - 1, part, run.offset, found));
      }
    }
    await Promise.all(below);
  }

  private countCache(runs: readonly Run[]): void {
    for (const run of runs) {
      if (run.state === 'absent') this.cacheStats.missBytes += run.length;
      else this.cacheStats.hitBytes += run.length;
    }
  }

  /** Reads from below the cache layer, then stores what was read in the cache (in the background). */
  private async readBelowCache(level: number, part: Buffer, offset: number, found: Run[]): Promise<void> {
    const below: Run[] = [];
    await this.readLevel(level - 1, part, offset, below);
    found.push(...below);
    this.fill?.store(below, part, offset);
  }

  /**
   * Warm: reads [offset, offset + buf.length) from the layers below the cache layer into `buf`
   * and stores it in the cache; resolves once it is stored, with what was stored.
   */
  async fillCache(buf: Buffer, offset: number): Promise<StoredBytes> {
    if (!this.fill || this.cacheIndex === 0) throw new RangeError('this stack has no cache layer with layers below it');
    const below: Run[] = [];
    await this.readLevel(this.cacheIndex - 1, buf, offset, below);
    return this.fill.storeNow(below, buf, offset);
  }

  /** Prefetch: stores the range in the cache layer (a warm of it). Without a writable cache, nothing. */
  async cache(offset: number, length: number): Promise<void> {
    if (!this.hasCache || this.layers[this.cacheIndex].readOnly) return;
    await warmStack(this, [{ offset, length }], { jobs: PREFETCH_JOBS, exact: true });
  }

  private assertWritable(): void {
    if (this.readOnly) throw new RequestError('EPERM', 'the export is read-only');
  }

  /**
   * The unit the top layer is written in (its request alignment, as QEMU's): writes and zeroes
   * are padded to it here, by reading the rest of their first and last unit through the stack,
   * and nowhere else. The export orders overlapping writes on ranges rounded out to it, so two
   * read-modify-writes of one unit never interleave.
   */
  get writeAlignment(): number {
    return this.top.requestAlignment ?? this.top.blockSize;
  }

  /** The top layer as padding sees it: reads go through the whole stack. */
  private paddingTarget(): PaddingTarget {
    const top = this.top;
    return {
      unit: this.writeAlignment,
      read: (buf, offset) => this.read(buf, offset),
      write: (buf, offset, options) => top.write(buf, offset, options),
      zero: (offset, length, options) => top.zero(offset, length, options),
      discard: (offset, length, options) => top.discard(offset, length, options),
    };
  }

  write(buf: Buffer, offset: number, options?: WriteOptions): Promise<void> {
    if (this.readOnly) return Promise.reject(new RequestError('EPERM', 'the export is read-only'));
    const u = this.writeAlignment;
    // Aligned (most writes): straight to the top, no padding target built.
    if (u <= 1 || (offset % u === 0 && buf.length % u === 0)) return this.top.write(buf, offset, options);
    return padWrite(this.paddingTarget(), buf, offset, options);
  }

  async writeZeroes(offset: number, length: number, options: ZeroOptions = {}): Promise<void> {
    this.assertWritable();
    return padZero(this.paddingTarget(), offset, length, options);
  }

  /** A hint: whole units inside the range may be released; partial ones are left alone. */
  async trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    this.assertWritable();
    return padTrim(this.paddingTarget(), offset, length, options);
  }

  /** True when the cache layer took fills that no flush has made durable yet. */
  get cacheDirty(): boolean {
    return this.fill?.dirty ?? false;
  }

  /** Makes every completed write durable: the top layer, and the cache's fills. */
  async flush(): Promise<void> {
    await this.fill?.settle();
    const work: Promise<void>[] = [];
    // A read-only stack can still have a writable cache on top (its fills).
    if (!this.top.readOnly) work.push(this.top.flush());
    const cache = this.hasCache ? this.layers[this.cacheIndex] : null;
    if (cache && cache !== this.top && !cache.readOnly) work.push(cache.flush());
    await Promise.all(work);
  }

  /**
   * The merged map of [offset, offset + length): for each run, the state the reader sees and
   * the depth of the layer that decides it (1 = top; 0 = no layer: absent, reads as zeros).
   * With `maxRuns`, at most that many runs, covering a prefix of the range: layers may stop
   * their maps early, and the answer ends where the first of them stopped.
   */
  async extents(offset: number, length: number, maxRuns?: number): Promise<DepthRun[]> {
    const out: DepthRun[] = [];
    const known = { end: offset + length };
    await this.extentsLevel(this.layers.length - 1, offset, length, out, known, maxRuns);
    out.sort((a, b) => a.offset - b.offset);
    const merged: DepthRun[] = [];
    for (const r of out) {
      if (r.offset >= known.end) break;
      const length = Math.min(r.length, known.end - r.offset);
      const last = merged[merged.length - 1];
      if (last && last.state === r.state && last.depth === r.depth && last.offset + last.length === r.offset) {
        last.length += length;
      } else {
        merged.push({ ...r, length });
      }
    }
    return maxRuns !== undefined && merged.length > maxRuns ? merged.slice(0, maxRuns) : merged;
  }

  private async extentsLevel(level: number, offset: number, length: number, out: DepthRun[], known: { end: number }, maxRuns?: number): Promise<void> {
    const layer = this.layers[level];
    const depth = this.layers.length - level;
    const inside = Math.max(0, Math.min(length, layer.size - offset));
    if (inside < length) out.push({ offset: offset + inside, length: length - inside, state: 'absent', depth: 0 });
    if (inside === 0) return;
    const runs = await layer.map(offset, inside, maxRuns);
    const last = runs[runs.length - 1];
    // A map that stopped early: nothing past its end is known.
    if (last && last.offset + last.length < offset + inside) known.end = Math.min(known.end, last.offset + last.length);
    const below: Promise<void>[] = [];
    for (const run of runs) {
      if (run.state !== 'absent') out.push({ ...run, depth });
      else if (level === 0) out.push({ ...run, depth: 0 });
      else below.push(this.extentsLevel(level - 1, run.offset, run.length, out, known, maxRuns));
    }
    await Promise.all(below);
  }

  /** The top layer's own map: what changed since it was appended (the dirty bitmap). */
  topMap(offset: number, length: number, maxRuns?: number): Promise<Run[]> {
    const inside = Math.max(0, Math.min(length, this.top.size - offset));
    return inside > 0 ? this.top.map(offset, inside, maxRuns) : Promise.resolve([]);
  }

  async close(): Promise<void> {
    await this.fill?.settle();
    const errors: unknown[] = [];
    for (const layer of [...this.layers].reverse()) {
      try {
        await layer.close();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length > 0) throw errors[0];
  }
}

/** Runs found out of order (levels answer concurrently), sorted and merged. */
function mergedRuns(found: Run[]): Run[] {
  if (found.length <= 1) return found;
  found.sort((a, b) => a.offset - b.offset);
  const merged: Run[] = [];
  for (const r of found) pushRun(merged, r.offset, r.length, r.state);
  return merged;
}
