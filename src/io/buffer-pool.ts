/**
 * Reusable buffers for request payloads and read replies. Every Buffer of 4 KiB or more is
 * memory outside V8's heap; allocating one per request makes V8 collect garbage far more often
 * (a profile of 1 MiB writes showed 29% of the main thread in GC, and 4 KiB random writes left
 * tens of MiB of dead payloads waiting for the collector). Buffers come in size classes (powers
 * of two); a released buffer is kept for the next request of its class, up to a total budget.
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

export class BufferPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  private pooledBytes = 0;
  private readonly issued = new WeakSet<ArrayBuffer>();

  constructor(private readonly maxBytes = 64 * 1024 * 1024) {}

  /** A buffer of exactly `size` bytes; its contents are not initialised. */
  take(size: number): Buffer {
    if (size < MIN_POOLED || size > MAX_POOLED) return Buffer.allocUnsafe(size);
    const cls = classOf(size);
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
    if (this.pooledBytes + cls > this.maxBytes) return;
    let list = this.free.get(cls);
    if (!list) {
      list = [];
      this.free.set(cls, list);
    }
    if (list.includes(backing)) throw new Error('BufferPool: a buffer was given back twice');
    list.push(backing);
    this.pooledBytes += cls;
  }

  /** Bytes held for reuse. */
  get idleBytes(): number {
    return this.pooledBytes;
  }
}
