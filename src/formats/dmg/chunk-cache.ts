/**
 * Decoded chunks, kept in a small least-recently-used cache bounded in bytes, so reads that
 * walk a compressed chunk in 4 KiB pieces decode it once. Two reads of a chunk that is being
 * decoded share that decode. A chunk larger than the whole cache is decoded for its readers
 * and not kept. At most `maxDecodes` chunks are decoded at once, the others wait: a client
 * with hundreds of reads in flight over as many chunks would otherwise hold a decode buffer
 * for each (hundreds of MiB), while the codecs cannot use more threads than the pool has.
 *
 * - States of a chunk: absent; waiting for a decode slot or decoding (a shared promise);
 *   cached (in LRU order).
 * - Invariants: `bytes` is the sum of the cached buffers and never exceeds `maxBytes` after an
 *   insertion; at most `maxDecodes` decodes run; a failed decode is not cached (the next read
 *   tries again and fails again). Cached buffers are never reused or changed, so evicting one
 *   under a reader is harmless.
 */
export class ChunkCache {
  private readonly cached = new Map<number, Buffer>();
  private readonly decoding = new Map<number, Promise<Buffer>>();
  private bytes = 0;
  private started = 0;
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(
    private readonly maxBytes: number,
    private readonly maxDecodes = 4,
  ) {}

  /** How many decodes were started. */
  get decodes(): number {
    return this.started;
  }

  get cachedBytes(): number {
    return this.bytes;
  }

  get(index: number, decode: (index: number) => Promise<Buffer>): Promise<Buffer> {
    const hit = this.cached.get(index);
    if (hit) {
      // Map order is insertion order: re-inserting marks the chunk as used last.
      this.cached.delete(index);
      this.cached.set(index, hit);
      return Promise.resolve(hit);
    }
    const pending = this.decoding.get(index);
    if (pending) return pending;
    const started = this.slot()
      .then(() => {
        this.started++;
        return decode(index).finally(() => this.release());
      })
      .then((buf) => {
        this.keep(index, buf);
        return buf;
      })
      .finally(() => this.decoding.delete(index));
    this.decoding.set(index, started);
    return started;
  }

  /** Resolves when a decode may start (a slot is taken for the caller). */
  private slot(): Promise<void> {
    if (this.running < this.maxDecodes) {
      this.running++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Hands the slot to the next waiting decode, or frees it. */
  private release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.running--;
  }

  private keep(index: number, buf: Buffer): void {
    if (buf.length > this.maxBytes) return;
    this.cached.set(index, buf);
    this.bytes += buf.length;
    for (const [oldest, old] of this.cached) {
      if (this.bytes <= this.maxBytes) break;
      this.cached.delete(oldest);
      this.bytes -= old.length;
    }
  }

  clear(): void {
    this.cached.clear();
    this.bytes = 0;
  }
}
