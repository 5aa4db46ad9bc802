/**
 * Storing in the cache layer what was read from below it, so that later reads (and the next
 * start) find it there without asking below again.
 *
 * - Data is written as data. Bytes that are all zeros are stored as zeros: a whole chunk of
 *   zeros becomes a zero chunk of the cache (a map change, "reads as zeros, hides what is
 *   below", which is right because below really is zero there), not a chunk of written zeros.
 *   A remote http base maps everything as data, so this is how a cache learns its holes.
 *   Zero runs below (holes of a file, zero chunks) are not stored: finding them again costs
 *   no data read.
 * - Reads fill in the background and see a chunk piece by piece: an all-zero piece of a chunk
 *   is held back (held-zeros.ts) until the whole chunk was seen zero (one zero chunk) or a piece
 *   of it held data (the held pieces are then written as zeros with it). `settle` (a flush, a
 *   close) stores whatever is still held.
 * - `storeNow` (warm, prefetch) is given whole chunks where it can: nothing is held back, and it
 *   resolves once everything is stored.
 * - Only layers below the cache are read for a fill and those never change, so whatever is
 *   stored, whenever it lands, is what below holds.
 */
import type { Run } from '../block/runs.js';
import { AsifImage } from '../formats/asif/index.js';
import type { Layer } from '../formats/layer.js';
import { HeldZeros, type ByteSpan } from './held-zeros.js';

/** Bytes read through the cache layer (hits, misses) and bytes stored in it by fills. */
export interface CacheStats {
  hitBytes: number;
  missBytes: number;
  /** Written into the cache as data. */
  storedDataBytes: number;
  /** Stored as zeros: zero chunks, and zeros written next to data. */
  storedZeroBytes: number;
}

export function emptyCacheStats(): CacheStats {
  return { hitBytes: 0, missBytes: 0, storedDataBytes: 0, storedZeroBytes: 0 };
}

/** What one store put in the cache. */
export interface StoredBytes {
  dataBytes: number;
  zeroBytes: number;
}

type StoreOp = { kind: 'data'; offset: number; bytes: Buffer } | { kind: 'zero'; offset: number; length: number };

export class CacheFill {
  private readonly pending = new Set<Promise<void>>();
  /** Stores made since the last `settle` (the export's timer syncs them). */
  private unsynced = 0;
  /** The cache's allocation unit (ASIF: its chunk size); null: zeros are written as data. */
  private readonly unit: number | null;
  private readonly held: HeldZeros | null;
  private zeroUnit: Buffer | null = null;

  constructor(
    readonly cache: Layer,
    private readonly stats: CacheStats,
    private readonly onError?: (err: unknown) => void,
  ) {
    this.unit = cache instanceof AsifImage ? cache.chunkSize : null;
    this.held = this.unit === null ? null : new HeldZeros(this.unit, cache.size);
  }

  /** True when stores were made (or pieces are held back) that no settle has made durable. */
  get dirty(): boolean {
    return this.unsynced > 0 || (this.held?.holding ?? false);
  }

  /**
   * In the background: stores the whole sectors of the data runs of what a read fetched from
   * below (`buf` holds the bytes of [offset, offset + buf.length)). The read does not wait.
   */
  store(runs: readonly Run[], buf: Buffer, offset: number): void {
    const ops = this.plan(runs, buf, offset, true);
    for (const op of ops) {
      // The store gets its own copy: the caller's buffer goes out on the socket and may be reused.
      const copy: StoreOp = op.kind === 'data' ? { ...op, bytes: Buffer.from(op.bytes) } : op;
      const job = this.run(copy).catch((err: unknown) => this.onError?.(err));
      this.pending.add(job);
      void job.finally(() => this.pending.delete(job));
    }
  }

  /** Stores like `store`, holding nothing back; resolves once stored (and fails if a store does). */
  async storeNow(runs: readonly Run[], buf: Buffer, offset: number): Promise<StoredBytes> {
    const ops = this.plan(runs, buf, offset, false);
    await Promise.all(ops.map((op) => this.run(op)));
    const stored: StoredBytes = { dataBytes: 0, zeroBytes: 0 };
    for (const op of ops) {
      if (op.kind === 'data') stored.dataBytes += op.bytes.length;
      else stored.zeroBytes += op.length;
    }
    return stored;
  }

  /** Waits for the background stores and stores what is held back; they are then unsynced no more. */
  async settle(): Promise<void> {
    for (const [start, end] of this.held?.takeAll() ?? []) {
      const job = this.run({ kind: 'zero', offset: start, length: end - start }).catch((err: unknown) => this.onError?.(err));
      this.pending.add(job);
      void job.finally(() => this.pending.delete(job));
    }
    while (this.pending.size > 0) await Promise.all([...this.pending]);
    this.unsynced = 0;
  }

  private async run(op: StoreOp): Promise<void> {
    this.unsynced++;
    if (op.kind === 'data') {
      await this.cache.write(op.bytes, op.offset);
      this.stats.storedDataBytes += op.bytes.length;
    } else {
      await this.cache.zero(op.offset, op.length);
      this.stats.storedZeroBytes += op.length;
    }
  }

  /** What to store for the data runs: writes and zeroings, adjacent ones of a kind merged. */
  private plan(runs: readonly Run[], buf: Buffer, offset: number, hold: boolean): StoreOp[] {
    const bs = this.cache.blockSize;
    const ops: StoreOp[] = [];
    const released: ByteSpan[] = [];
    for (const run of runs) {
      if (run.state !== 'data') continue;
      const start = Math.ceil(run.offset / bs) * bs;
      const end = Math.floor((run.offset + run.length) / bs) * bs;
      if (end <= start) continue;
      if (this.unit === null) {
        ops.push({ kind: 'data', offset: start, bytes: buf.subarray(start - offset, end - offset) });
        continue;
      }
      for (let at = start; at < end; ) {
        const next = Math.min(end, (Math.floor(at / this.unit) + 1) * this.unit);
        const bytes = buf.subarray(at - offset, next - offset);
        this.planPiece(ops, released, bytes, at, hold);
        at = next;
      }
    }
    for (const [s, e] of released) pushZero(ops, s, e - s);
    return ops;
  }

  /** One piece inside one chunk of the cache. */
  private planPiece(ops: StoreOp[], released: ByteSpan[], bytes: Buffer, at: number, hold: boolean): void {
    const unit = this.unit!;
    const held = this.held!;
    if (!this.isZero(bytes)) {
      if (hold) held.dataPiece(Math.floor(at / unit), released);
      const last = ops[ops.length - 1];
      if (last?.kind === 'data' && last.offset + last.bytes.length === at && last.bytes.buffer === bytes.buffer && last.bytes.byteOffset + last.bytes.length === bytes.byteOffset) {
        last.bytes = Buffer.from(bytes.buffer, last.bytes.byteOffset, last.bytes.length + bytes.length);
      } else ops.push({ kind: 'data', offset: at, bytes });
      return;
    }
    if (!hold || bytes.length === unit) {
      pushZero(ops, at, bytes.length);
      return;
    }
    const outcome = held.zeroPiece(at, at + bytes.length, released);
    if (outcome.action === 'store') pushZero(ops, at, bytes.length);
    else if (outcome.action === 'chunk') pushZero(ops, outcome.start, outcome.end - outcome.start);
  }

  private isZero(bytes: Buffer): boolean {
    const zeros = (this.zeroUnit ??= Buffer.alloc(this.unit!));
    return bytes.equals(zeros.subarray(0, bytes.length));
  }
}

function pushZero(ops: StoreOp[], offset: number, length: number): void {
  const last = ops[ops.length - 1];
  if (last?.kind === 'zero' && last.offset + last.length === offset) last.length += length;
  else ops.push({ kind: 'zero', offset, length });
}
