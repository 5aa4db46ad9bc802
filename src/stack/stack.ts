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
 * - Writes, zeroes and trims go to the top layer only. When layers lie below, the top is given
 *   whole sectors: a write that does not cover whole sectors reads the rest of its first and
 *   last sector through the stack first; whole-sector writes never read below.
 * - The top layer sets the size. A cache layer is never the top of a writable stack.
 */
import { RequestError } from '../block/errors.js';
import { pushRun, type Run } from '../block/runs.js';
import type { Layer, WriteOptions, ZeroOptions } from '../formats/layer.js';
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
  async read(buf: Buffer, offset: number): Promise<Run[]> {
    const found: Run[] = [];
    await this.readLevel(this.layers.length - 1, buf, offset, found);
    if (found.length <= 1) return found;
    found.sort((a, b) => a.offset - b.offset);
    const merged: Run[] = [];
    for (const r of found) pushRun(merged, r.offset, r.length, r.state);
    return merged;
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

  /** True when the top layer must be handed whole sectors (something lies below it). */
  private needsWholeSectors(): boolean {
    return this.layers.length > 1;
  }

  async write(buf: Buffer, offset: number, options?: WriteOptions): Promise<void> {
    this.assertWritable();
    const bs = this.top.blockSize;
    if (!this.needsWholeSectors() || (offset % bs === 0 && buf.length % bs === 0)) {
      return this.top.write(buf, offset, options);
    }
    const wide = await this.widenToSectors(offset, buf.length);
    buf.copy(wide.buf, offset - wide.start);
    return this.top.write(wide.buf, wide.start, options);
  }

  /**
   * A buffer covering the whole sectors around [offset, offset + length), with the first and
   * last sector already read through the stack (the middle is left for the caller to fill).
   */
  private async widenToSectors(offset: number, length: number): Promise<{ start: number; buf: Buffer }> {
    const bs = this.top.blockSize;
    const start = Math.floor(offset / bs) * bs;
    const end = Math.ceil((offset + length) / bs) * bs;
    const buf = Buffer.allocUnsafe(end - start);
    const headPartial = start < offset;
    const tailPartial = end > offset + length;
    const reads: Promise<Run[]>[] = [];
    if (headPartial) reads.push(this.read(buf.subarray(0, bs), start));
    // The last sector, unless it is the first one and was just read.
    if (tailPartial && !(headPartial && end - bs === start)) {
      reads.push(this.read(buf.subarray(buf.length - bs), end - bs));
    }
    await Promise.all(reads);
    return { start, buf };
  }

  async writeZeroes(offset: number, length: number, options: ZeroOptions = {}): Promise<void> {
    this.assertWritable();
    if (length === 0) return;
    if (!this.needsWholeSectors()) return this.top.zero(offset, length, options);
    const bs = this.top.blockSize;
    const innerStart = Math.ceil(offset / bs) * bs;
    const innerEnd = Math.floor((offset + length) / bs) * bs;
    const aligned = innerStart === offset && innerEnd === offset + length;
    if (options.fast && !aligned) {
      throw new RequestError('ENOTSUP', 'zeroing part of a sector needs a read-modify-write');
    }
    if (innerEnd > innerStart) await this.top.zero(innerStart, innerEnd - innerStart, options);
    const fua = options.fua ? { fua: true } : undefined;
    if (innerEnd <= innerStart) {
      // Entirely inside one sector (or two partial ones): one read-modify-write.
      await this.write(Buffer.alloc(length), offset, fua);
      return;
    }
    if (offset < innerStart) await this.write(Buffer.alloc(innerStart - offset), offset, fua);
    if (offset + length > innerEnd) await this.write(Buffer.alloc(offset + length - innerEnd), innerEnd, fua);
  }

  /** A hint: whole sectors inside the range may be released; partial sectors are left alone. */
  async trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    this.assertWritable();
    if (!this.needsWholeSectors()) return this.top.discard(offset, length, options);
    const bs = this.top.blockSize;
    const start = Math.ceil(offset / bs) * bs;
    const end = Math.floor((offset + length) / bs) * bs;
    if (end > start) await this.top.discard(start, end - start, options);
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

