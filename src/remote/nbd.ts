/**
 * An export of an upstream NBD server as the read-only base of a stack
 * (`nbd://host[:port]/export`, `nbds://…`, `nbd+unix:///export?socket=PATH`).
 *
 * - Stores: nothing locally; reads go to the upstream through a pool of connections
 *   (nbd-pool.ts: multi-conn, reconnects, replays, the retry budget, refusal of a changed
 *   upstream).
 * - States: the upstream's `base:allocation` says what is a hole that reads as zeros ('zero')
 *   and what is data; a hole without the zero bit, and everything when the upstream offers no
 *   base:allocation, is 'data'. Answers are cached (extent-cache.ts): the stack maps every read
 *   before it reads it.
 * - Invariants: read-only (writes are EPERM); the size is the upstream's at open and never
 *   changes (an upstream that comes back with another size is refused, reads then fail with
 *   EIO); every request to the upstream is aligned to its minimum block size (unaligned edges
 *   go through a bounce buffer) and at most its maximum payload. The layer block size is 512,
 *   or 4096 when the upstream's minimum block size is larger than 512.
 */
import { RequestError } from '../block/errors.js';
import { pushRun, type Run } from '../block/runs.js';
import type { Layer, LayerDetails, ParentPin } from '../formats/layer.js';
import { AllocationState, MetaContext } from '../nbd/constants.js';
import { ExtentCache } from './extent-cache.js';
import { NbdConnectionPool, type NbdPoolOptions, type PoolStats } from './nbd-pool.js';
import { NbdSourceError, resolveNbdSource, type NbdSource } from './nbd-source.js';
import { ReadOnlyBase } from '../formats/read-only-base.js';

export { isNbdSource, NbdSourceError } from './nbd-source.js';
export type { NbdPoolOptions } from './nbd-pool.js';

export type NbdBaseOptions = NbdPoolOptions;

/** Block status asks at least this much at once, so that the next reads find their map cached. */
const STATUS_PREFETCH = 8 * 1024 * 1024;
/** A block status request stays well inside the 32-bit length of compact requests. */
const STATUS_MAX = 1024 * 1024 * 1024;
const CACHED_RUNS = 65536;

/** The parts of `runs` inside [start, end). */
function clip(runs: readonly Run[], start: number, end: number): Run[] {
  const out: Run[] = [];
  for (const r of runs) {
    const from = Math.max(start, r.offset);
    const to = Math.min(end, r.offset + r.length);
    if (to > from) pushRun(out, from, to - from, r.state);
  }
  return out;
}

export class NbdBase extends ReadOnlyBase implements Layer {
  readonly format = 'nbd' as const;
  protected readonly what = 'an NBD base';
  override readonly blockSize: number;
  private readonly extents = new ExtentCache(CACHED_RUNS);
  private readonly pendingStatus: Array<{ start: number; stop: number; done: Promise<void> }> = [];

  constructor(
    private readonly source: NbdSource,
    private readonly pool: NbdConnectionPool,
  ) {
    super();
    this.blockSize = pool.facts.minBlockSize > 512 ? 4096 : 512;
  }

  get path(): string {
    return this.source.display;
  }

  get size(): number {
    return this.pool.facts.size;
  }

  /** Connections, reconnects, replays and peak concurrency so far. */
  get stats(): Readonly<PoolStats> {
    return this.pool.stats;
  }

  /** Resolves once every connection of the pool has made its first attempt to connect. */
  get connectionsSettled(): Promise<void> {
    return this.pool.connectionsSettled;
  }

  /** Why reads fail with EIO for good (the upstream changed or lost the export), or null. */
  get refused(): string | null {
    return this.pool.refused;
  }

  /** The upstream's size and export name: a different upstream behind the same URI shows. */
  pin(): Promise<ParentPin> {
    return Promise.resolve({ size: this.size, export: this.source.target.exportName });
  }

  details(): Promise<LayerDetails> {
    const f = this.pool.facts;
    return Promise.resolve({
      uri: this.source.display,
      export: this.source.target.exportName,
      tls: this.source.target.tls,
      minimumBlockSize: f.minBlockSize,
      maximumPayload: f.maxPayload,
      baseAllocation: f.hasAllocation,
      multiConn: f.multiConn,
      connections: this.pool.stats.connections,
    });
  }

  async map(offset: number, length: number, maxRuns?: number): Promise<Run[]> {
    if (length <= 0) return [];
    if (!this.pool.facts.hasAllocation) return [{ offset, length, state: 'data' }];
    const end = offset + length;
    const out: Run[] = [];
    let pos = offset;
    while (pos < end && (maxRuns === undefined || out.length < maxRuns)) {
      let known = this.extents.lookup(pos, end);
      if (known.length === 0) {
        await this.fetchStatus(pos, end);
        known = this.extents.lookup(pos, end);
        // The cache may have been emptied by a concurrent fill: use this answer once more.
        if (known.length === 0) known = clip(await this.statusRuns(pos, end), pos, end);
      }
      for (const r of known) pushRun(out, r.offset, r.length, r.state);
      pos = out[out.length - 1].offset + out[out.length - 1].length;
    }
    return out;
  }

  /** Asks the upstream about [pos, …) (at least up to `end`, aligned) and caches the answer; concurrent maps of one range share one request. */
  private async fetchStatus(pos: number, end: number): Promise<void> {
    const pending = this.pendingStatus.find((p) => p.start <= pos && pos < p.stop);
    if (pending) return pending.done;
    const entry = { start: pos, stop: Math.min(this.size, Math.max(end, pos + STATUS_PREFETCH)), done: Promise.resolve() };
    entry.done = this.statusRuns(pos, end)
      .then((runs) => this.extents.store(runs))
      .finally(() => this.pendingStatus.splice(this.pendingStatus.indexOf(entry), 1));
    this.pendingStatus.push(entry);
    return entry.done;
  }

  /** The upstream's base:allocation from an aligned start at or before `pos`; covers at least one byte past `pos`. */
  private async statusRuns(pos: number, end: number): Promise<Run[]> {
    const m = this.pool.facts.minBlockSize;
    const start = pos - (pos % m);
    const want = Math.min(this.size, Math.max(end, start + STATUS_PREFETCH), start + STATUS_MAX);
    const stop = Math.min(this.size, Math.ceil(want / m) * m);
    let extents: Array<{ length: number; flags: number }> = [];
    await this.pool.submit(async (client) => {
      const status = await client.blockStatus(start, stop - start);
      extents = status.get(MetaContext.BASE_ALLOCATION) ?? [];
    });
    const runs: Run[] = [];
    let at = start;
    for (const e of extents) {
      pushRun(runs, at, e.length, e.flags & AllocationState.ZERO ? 'zero' : 'data');
      at += e.length;
    }
    if (at <= pos) throw new RequestError('EIO', `${this.path}: the upstream's block status stopped at ${at}, before ${pos}`);
    return runs;
  }

  async read(buf: Buffer, offset: number): Promise<void> {
    if (buf.length === 0) return;
    const end = offset + buf.length;
    if (offset < 0 || end > this.size) throw new RequestError('EINVAL', `${this.path}: read of ${offset}+${buf.length} past the end (${this.size})`);
    const m = this.pool.facts.minBlockSize;
    const innerStart = Math.ceil(offset / m) * m;
    const innerEnd = Math.max(innerStart, end === this.size ? end : end - (end % m));
    const work: Promise<void>[] = [];
    if (innerStart > offset) work.push(this.readBounced(buf.subarray(0, Math.min(buf.length, innerStart - offset)), offset));
    if (innerEnd > innerStart) work.push(this.readAligned(buf.subarray(innerStart - offset, innerEnd - offset), innerStart));
    if (end > innerEnd) work.push(this.readBounced(buf.subarray(innerEnd - offset), innerEnd));
    await Promise.all(work);
  }

  /** Reads the whole blocks around a piece that is not aligned to the upstream's minimum block size. */
  private async readBounced(target: Buffer, offset: number): Promise<void> {
    const m = this.pool.facts.minBlockSize;
    const start = offset - (offset % m);
    const stop = Math.min(this.size, Math.ceil((offset + target.length) / m) * m);
    const bounce = Buffer.allocUnsafe(stop - start);
    await this.readAligned(bounce, start);
    bounce.copy(target, 0, offset - start, offset - start + target.length);
  }

  /** Aligned reads, cut at the upstream's maximum payload, all in flight at once. */
  private async readAligned(buf: Buffer, offset: number): Promise<void> {
    const piece = this.pool.facts.maxPayload;
    const work: Promise<void>[] = [];
    for (let done = 0; done < buf.length; done += piece) {
      const part = buf.subarray(done, Math.min(buf.length, done + piece));
      const at = offset + done;
      work.push(this.pool.submit((client) => client.pread(at, part.length, { into: part }).then(() => undefined)));
    }
    await Promise.all(work);
  }


  close(): Promise<void> {
    return this.pool.close();
  }
}

/** Opens an upstream NBD export as a read-only base; an unreachable or unusable upstream is an NbdSourceError. */
export async function openNbdBase(uri: string, options: NbdBaseOptions = {}): Promise<NbdBase> {
  const source = await resolveNbdSource(uri);
  let pool: NbdConnectionPool;
  try {
    pool = await NbdConnectionPool.open(source, options);
  } catch (err) {
    throw new NbdSourceError(source.display, `cannot open the upstream export: ${err instanceof Error ? err.message : String(err)}`);
  }
  return new NbdBase(source, pool);
}
