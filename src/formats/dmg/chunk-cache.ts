/**
 * Decoded chunks, kept in a small least-recently-used cache bounded in bytes, so reads that
 * walk a compressed chunk in 4 KiB pieces decode it once. Two reads of a chunk that is being
 * decoded share that decode. A chunk larger than the whole cache is decoded for its readers
 * and not kept.
 *
 * - States of a chunk: absent; decoding (a shared promise); cached (in LRU order).
 * - Invariants: `bytes` is the sum of the cached buffers and never exceeds `maxBytes` after an
 *   insertion; a failed decode is not cached (the next read tries again and fails again).
 *   Cached buffers are never reused or changed, so evicting one under a reader is harmless.
 */
export class ChunkCache {
  private readonly cached = new Map<number, Buffer>();
  private readonly decoding = new Map<number, Promise<Buffer>>();
  private bytes = 0;
  private started = 0;

  constructor(private readonly maxBytes: number) {}

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
    this.started++;
    const started = decode(index)
      .then((buf) => {
        this.keep(index, buf);
        return buf;
      })
      .finally(() => this.decoding.delete(index));
    this.decoding.set(index, started);
    return started;
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
