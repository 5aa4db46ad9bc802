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

/** Overlapping-write ordering works on ranges rounded out to this, so that two writes into the
 * same sector (which a layer completes by read-modify-write) never interleave. */
const LOCK_GRANULE = 4096;

export interface ExportOptions {
  name: string;
  description?: string;
  /** Map changes reach disk at least this often even if no client sends FLUSH; 0 disables. */
  syncIntervalMs?: number;
  logger?: Logger;
}

export interface ExportCounters {
  reads: number;
  readBytes: number;
  writes: number;
  writeBytes: number;
  zeroes: number;
  trims: number;
  flushes: number;
  caches: number;
  blockStatus: number;
  errors: number;
  syncs: number;
}

export class Export {
  readonly name: string;
  readonly description: string;
  readonly counters: ExportCounters = {
    reads: 0,
    readBytes: 0,
    writes: 0,
    writeBytes: 0,
    zeroes: 0,
    trims: 0,
    flushes: 0,
    caches: 0,
    blockStatus: 0,
    errors: 0,
    syncs: 0,
  };
  private readonly locks = new RangeLock();
  private connections = 0;
  private dirty = false;
  private syncing: Promise<void> | null = null;
  private readonly timer: NodeJS.Timeout | null;
  private closed = false;

  constructor(
    readonly stack: Stack,
    private readonly options: ExportOptions,
  ) {
    this.name = options.name;
    this.description = options.description ?? '';
    const interval = options.syncIntervalMs ?? 0;
    this.timer = interval > 0 && !stack.readOnly ? setInterval(() => void this.syncIfDirty('timer'), interval) : null;
    this.timer?.unref();
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
    if (this.connections === 0) await this.syncIfDirty('last connection closed');
  }

  private lock(offset: number, length: number): Promise<Release> {
    const start = Math.floor(offset / LOCK_GRANULE) * LOCK_GRANULE;
    const end = Math.ceil((offset + length) / LOCK_GRANULE) * LOCK_GRANULE;
    return this.locks.acquire(start, end - start);
  }

  /** Runs a write-type operation once every earlier overlapping one has finished. The lock is
   * taken synchronously, so the order is the order in which requests were parsed. */
  private ordered(offset: number, length: number, op: () => Promise<void>): Promise<void> {
    const locked = this.lock(offset, length);
    return locked.then(async (release) => {
      try {
        this.dirty = true;
        await op();
      } finally {
        release();
      }
    });
  }

  read(buf: Buffer, offset: number): Promise<Run[]> {
    this.counters.reads++;
    this.counters.readBytes += buf.length;
    return this.stack.read(buf, offset);
  }

  write(buf: Buffer, offset: number, options?: WriteOptions): Promise<void> {
    this.counters.writes++;
    this.counters.writeBytes += buf.length;
    return this.ordered(offset, buf.length, () => this.stack.write(buf, offset, options));
  }

  writeZeroes(offset: number, length: number, options?: ZeroOptions): Promise<void> {
    this.counters.zeroes++;
    return this.ordered(offset, length, () => this.stack.writeZeroes(offset, length, options));
  }

  trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    this.counters.trims++;
    return this.ordered(offset, length, () => this.stack.trim(offset, length, options));
  }

  cache(offset: number, length: number): Promise<void> {
    this.counters.caches++;
    return this.stack.cache(offset, length);
  }

  async flush(): Promise<void> {
    this.counters.flushes++;
    this.dirty = false;
    await this.stack.flush();
  }

  extents(offset: number, length: number): Promise<DepthRun[]> {
    this.counters.blockStatus++;
    return this.stack.extents(offset, length);
  }

  topMap(offset: number, length: number): Promise<Run[]> {
    return this.stack.topMap(offset, length);
  }

  /** Syncs if anything was written since the last sync; concurrent calls share one sync. */
  syncIfDirty(reason: string): Promise<void> {
    if (this.syncing) return this.syncing;
    if (!this.dirty || this.closed) return Promise.resolve();
    this.dirty = false;
    const started = Date.now();
    this.syncing = this.stack
      .flush()
      .then(() => {
        this.counters.syncs++;
        this.options.logger?.debug({ export: this.name, reason, ms: Date.now() - started }, 'synced');
      })
      .catch((err: unknown) => {
        this.dirty = true;
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
    if (this.timer) clearInterval(this.timer);
    if (this.syncing) await this.syncing;
    this.closed = true;
    await this.stack.close();
  }
}
