/**
 * One exported stack, shared by every connection to it. The export owns what must outlive a
 * connection: the stack, the ordering of overlapping writes (by arrival, across connections),
 * the sync policy and the counters. Sessions come and go; clients such as Apple's reconnect
 * on their own and must find the same size, flags and data.
 */
import type { Logger } from 'pino';
import { RangeLock, type Release } from '../block/range-lock.js';
import type { Run } from '../block/runs.js';
import type { WriteOptions, ZeroOptions } from '../formats/layer.js';
import { MetaContext, TransmissionFlag } from '../nbd/constants.js';
import type { DepthRun, Stack } from '../stack/stack.js';
import { ExportStats } from './export-stats.js';
import type { ReadRecorder } from './read-recorder.js';

export interface ExportOptions {
  name: string;
  description?: string;
  /** Map changes reach disk at least this often even if no client sends FLUSH; 0 disables. */
  syncIntervalMs?: number;
  logger?: Logger;
  /** Records what clients read (serve --record-reads), written when the last client leaves. */
  readRecorder?: ReadRecorder;
}

export class Export {
  readonly name: string;
  readonly description: string;
  readonly stats = new ExportStats();
  private current: Stack;
  private readonly locks = new RangeLock();
  private connections = 0;
  private dirty = false;
  private syncing: Promise<void> | null = null;
  private readonly intervalMs: number;
  /** The one-shot sync after a write (armed while something waits to be synced). */
  private syncTimer: NodeJS.Timeout | null = null;
  /** Stacks with a cache layer: a periodic sync of the fills. */
  private readonly fillTimer: NodeJS.Timeout | null;
  private closed = false;

  constructor(
    stack: Stack,
    private readonly options: ExportOptions,
  ) {
    this.current = stack;
    this.name = options.name;
    this.description = options.description ?? '';
    this.intervalMs = options.syncIntervalMs ?? 0;
    this.fillTimer = this.intervalMs > 0 && stack.hasCache ? setInterval(() => void this.syncIfDirty('timer'), this.intervalMs) : null;
    this.fillTimer?.unref();
  }

  /** Something waits to be synced: make sure the timer will sync it. */
  private armSync(): void {
    if (this.syncTimer !== null || this.intervalMs <= 0 || this.closed) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = null;
      void this.syncIfDirty('timer');
    }, this.intervalMs);
    this.syncTimer.unref();
  }

  /** The stack served now; a live snapshot replaces it with one that has a new top layer. */
  get stack(): Stack {
    return this.current;
  }

  get size(): number {
    return this.stack.size;
  }

  get readOnly(): boolean {
    return this.stack.readOnly;
  }

  get connectionCount(): number {
    return this.connections;
  }

  /** The transmission flags; identical on every connection but for DF, which depends on
   * whether that connection negotiated structured replies. */
  transmissionFlags(structured: boolean): number {
    let flags = TransmissionFlag.HAS_FLAGS | TransmissionFlag.SEND_FLUSH | TransmissionFlag.SEND_CACHE;
    // One stack is shared by all connections, so a FLUSH on one covers the writes of all.
    flags |= TransmissionFlag.CAN_MULTI_CONN;
    if (this.readOnly) flags |= TransmissionFlag.READ_ONLY;
    else {
      flags |= TransmissionFlag.SEND_FUA | TransmissionFlag.SEND_TRIM;
      flags |= TransmissionFlag.SEND_WRITE_ZEROES | TransmissionFlag.SEND_FAST_ZERO;
    }
    if (structured) flags |= TransmissionFlag.SEND_DF;
    return flags;
  }

  /** Metadata contexts a client can select on this export. */
  metaContexts(): string[] {
    const names: string[] = [MetaContext.BASE_ALLOCATION, MetaContext.ALLOCATION_DEPTH];
    if (this.stack.layers.length > 1) names.push(`${MetaContext.DIRTY_BITMAP_PREFIX}overlay`);
    return names;
  }

  attach(): void {
    this.connections++;
  }

  /** A connection went away; when it was the last one, what it wrote is made durable. */
  async detach(): Promise<void> {
    this.connections = Math.max(0, this.connections - 1);
    if (this.connections === 0) await Promise.all([this.syncIfDirty('last connection closed'), this.options.readRecorder?.save()]);
  }

  private lock(offset: number, length: number): Promise<Release> {
    // Rounded out to the unit the stack pads writes to, so that two read-modify-writes of one
    // unit never interleave.
    const unit = this.stack.writeAlignment;
    const start = Math.floor(offset / unit) * unit;
    const end = Math.ceil((offset + length) / unit) * unit;
    return this.locks.acquire(start, end - start);
  }

  /** Runs a write-type operation once every earlier overlapping one has finished. The lock is
   * taken before the first await, synchronously, so the order is the order in which requests
   * were parsed. */
  private async ordered(offset: number, length: number, op: () => Promise<void>): Promise<void> {
    const release = await this.lock(offset, length);
    try {
      this.dirty = true;
      this.armSync();
      await op();
    } finally {
      release();
    }
  }

  read(buf: Buffer, offset: number): Promise<Run[]> {
    this.options.readRecorder?.note(offset, buf.length);
    return this.stack.read(buf, offset);
  }

  write(buf: Buffer, offset: number, options?: WriteOptions): Promise<void> {
    return this.ordered(offset, buf.length, () => this.stack.write(buf, offset, options));
  }

  writeZeroes(offset: number, length: number, options?: ZeroOptions): Promise<void> {
    return this.ordered(offset, length, () => this.stack.writeZeroes(offset, length, options));
  }

  trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    return this.ordered(offset, length, () => this.stack.trim(offset, length, options));
  }

  cache(offset: number, length: number): Promise<void> {
    return this.stack.cache(offset, length);
  }

  /** FLUSH: every completed write is durable when this resolves. A failed sync leaves the
   * export dirty, so the timer and the last disconnect try again. */
  async flush(): Promise<void> {
    this.dirty = false;
    const started = performance.now();
    try {
      await this.stack.flush();
    } catch (err) {
      this.dirty = true;
      this.armSync();
      throw err;
    }
    this.stats.recordSync((performance.now() - started) / 1000);
  }

  /** A failure that is not a plain request error (the disk failing, a bug): logged with the request. */
  logUnexpected(err: unknown, request: { command: string; offset: number; length: number }): void {
    this.options.logger?.error({ export: this.name, ...request, err }, 'request failed unexpectedly');
  }

  /**
   * Live snapshot: freezes the top layer and serves a new one on top of it. Writes that arrived
   * before run to the old top and are flushed; writes that arrive meanwhile wait and then go to
   * the new top in their order of arrival. Reads go on throughout.
   */
  async snapshot(makeTop: (frozen: Stack) => Promise<Stack>): Promise<void> {
    if (this.readOnly) throw new Error(`export "${this.name}" is read-only: there is nothing to snapshot`);
    const release = await this.locks.acquire(0, Number.MAX_SAFE_INTEGER);
    try {
      await this.current.flush();
      this.dirty = false;
      this.current = await makeTop(this.current);
      this.options.logger?.info({ export: this.name, layers: this.current.layers.map((l) => l.path) }, 'snapshot taken');
    } finally {
      release();
    }
  }

  extents(offset: number, length: number, maxRuns?: number): Promise<DepthRun[]> {
    return this.stack.extents(offset, length, maxRuns);
  }

  topMap(offset: number, length: number, maxRuns?: number): Promise<Run[]> {
    return this.stack.topMap(offset, length, maxRuns);
  }

  /** Syncs if anything was written since the last sync; concurrent calls share one sync. */
  syncIfDirty(reason: string): Promise<void> {
    if (this.syncing) return this.syncing;
    // Cache fills are not client writes, but a restart should find them: the timer syncs them too.
    if ((!this.dirty && !this.stack.cacheDirty) || this.closed) return Promise.resolve();
    this.dirty = false;
    const started = performance.now();
    this.syncing = this.stack
      .flush()
      .then(() => {
        const ms = performance.now() - started;
        this.stats.recordSync(ms / 1000);
        this.options.logger?.debug({ export: this.name, reason, ms: Math.round(ms) }, 'synced');
      })
      .catch((err: unknown) => {
        this.dirty = true;
        this.armSync();
        this.options.logger?.error({ export: this.name, reason, err }, 'sync failed');
      })
      .finally(() => {
        this.syncing = null;
      });
    return this.syncing;
  }

  /** Syncs and closes the stack; the export serves nothing afterwards. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.fillTimer) clearInterval(this.fillTimer);
    if (this.syncing) await this.syncing;
    this.closed = true;
    await this.options.readRecorder?.save();
    // After the last sync: one that failed re-armed the timer.
    if (this.syncTimer) clearTimeout(this.syncTimer);
    this.syncTimer = null;
    await this.stack.close();
  }
}
