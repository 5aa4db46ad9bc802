/**
 * Reusable buffers for request payloads and read replies. Every Buffer of 4 KiB or more is
 * memory outside V8's heap; allocating one per request makes V8 collect garbage far more often
 * (a profile of 1 MiB writes showed 29% of the main thread in GC, and 4 KiB random writes left
 * tens of MiB of dead payloads waiting for the collector). Buffers come in size classes (powers
 * of two); a released buffer is kept for the next request of its class, up to a budget that
 * follows demand: what was in use at once over the last few seconds (at least a base, at most a
 * maximum), falling back to the base once no buffer has been asked for in a while.
 * Smaller buffers come from Node's own pool.
 *
 * A buffer may be released only once nothing uses it any more: for a reply, when the socket
 * has taken it; for a payload, when the write that carried it finished.
 */
const MIN_POOLED = 4096;
const MAX_POOLED = 64 * 1024 * 1024;

/** The class (a power of two) that holds `size` bytes. */
function classOf(size: number): number {
  return 2 ** Math.ceil(Math.log2(size));
}

export interface BufferPoolLimits {
  /** Idle bytes kept however quiet the server has been. */
  baseBytes: number;
  /** Idle bytes kept at most, when the demand of the last few seconds was that high. */
  maxBytes: number;
  /** After this long without a take, idle bytes above `baseBytes` are let go. */
  quietMs: number;
}

const DEFAULT_LIMITS: BufferPoolLimits = { baseBytes: 64 * 1024 * 1024, maxBytes: 256 * 1024 * 1024, quietMs: 10_000 };

export class BufferPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  private pooledBytes = 0;
  private readonly issued = new WeakSet<ArrayBuffer>();
  private readonly limits: BufferPoolLimits;
  /** Bytes of pooled classes handed out and not given back yet. */
  private outstanding = 0;
  /** The most outstanding at once in the current and in the previous half of `quietMs`. */
  private peak = 0;
  private previousPeak = 0;
  private windowStarted = 0;
  private lastTake = 0;
  private trimTimer: NodeJS.Timeout | null = null;

  constructor(limits: Partial<BufferPoolLimits> = {}) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
  }

  /** A buffer of exactly `size` bytes; its contents are not initialised. */
  take(size: number): Buffer {
    if (size < MIN_POOLED || size > MAX_POOLED) return Buffer.allocUnsafe(size);
    const cls = classOf(size);
    this.noteDemand(cls);
    const backing = this.free.get(cls)?.pop();
    if (backing) {
      this.pooledBytes -= cls;
      return Buffer.from(backing, 0, size);
    }
    const fresh = Buffer.allocUnsafeSlow(cls).buffer as ArrayBuffer;
    this.issued.add(fresh);
    return Buffer.from(fresh, 0, size);
  }

  /** Hands a buffer from `take` back; anything else is ignored (left to the GC). */
  give(buf: Buffer): void {
    const backing = buf.buffer as ArrayBuffer;
    if (buf.byteOffset !== 0 || !this.issued.has(backing)) return;
    const cls = backing.byteLength;
    this.outstanding = Math.max(0, this.outstanding - cls);
    if (this.pooledBytes + cls > this.budget()) return;
    let list = this.free.get(cls);
    if (!list) {
      list = [];
      this.free.set(cls, list);
    }
    if (list.includes(backing)) throw new Error('BufferPool: a buffer was given back twice');
    list.push(backing);
    this.pooledBytes += cls;
    if (this.pooledBytes > this.limits.baseBytes) this.armTrim();
  }

  /** Bytes held for reuse. */
  get idleBytes(): number {
    return this.pooledBytes;
  }

  /**
   * Idle bytes worth keeping: as many as were in use at once lately (a bulk copy over four
   * connections keeps 128 MiB of 512 KiB replies in flight, and dropping what exceeds a fixed
   * 64 MiB made nearly every reply a fresh allocation whose pages the kernel zeroes on first
   * touch), never less than the base, never more than the maximum.
   */
  private budget(): number {
    const recent = Math.max(this.peak, this.previousPeak);
    return Math.min(this.limits.maxBytes, Math.max(this.limits.baseBytes, recent));
  }

  private noteDemand(cls: number): void {
    const now = performance.now();
    this.lastTake = now;
    const sinceWindow = now - this.windowStarted;
    if (sinceWindow > this.limits.quietMs / 2) {
      // After a longer silence the window before this one saw no demand at all.
      this.previousPeak = sinceWindow > this.limits.quietMs ? 0 : this.peak;
      this.peak = this.outstanding;
      this.windowStarted = now;
    }
    this.outstanding += cls;
    if (this.outstanding > this.peak) this.peak = this.outstanding;
  }

  /** Once the server has been quiet for `quietMs`, idle buffers above the base go to the GC. */
  private armTrim(): void {
    if (this.trimTimer) return;
    this.trimTimer = setTimeout(() => {
      this.trimTimer = null;
      if (performance.now() - this.lastTake < this.limits.quietMs) return this.armTrim();
      this.trimTo(this.limits.baseBytes);
    }, this.limits.quietMs);
    this.trimTimer.unref();
  }

  private trimTo(bytes: number): void {
    // Largest classes first: fewest buffers to let go for the bytes.
    for (const cls of [...this.free.keys()].sort((a, b) => b - a)) {
      const list = this.free.get(cls)!;
      while (this.pooledBytes > bytes && list.length > 0) {
        list.pop();
        this.pooledBytes -= cls;
      }
    }
    this.peak = this.previousPeak = 0;
  }
}
