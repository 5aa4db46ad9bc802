/**
 * Bytes received from a socket, consumed front to back. `take` returns a view into the
 * received chunk when the bytes lie in one chunk (the common case for request headers and for
 * payloads the kernel delivered whole) and copies only when they straddle chunks.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0;
  private total = 0;

  get length(): number {
    return this.total;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  /**
   * Removes and returns the next `n` bytes. The caller checks `length >= n` first. When they
   * straddle chunks they are copied into a buffer from `allocate` (default: a new one).
   */
  take(n: number, allocate: (size: number) => Buffer = Buffer.allocUnsafe): Buffer {
    if (n > this.total) throw new RangeError(`take(${n}) with only ${this.total} bytes queued`);
    this.total -= n;
    const first = this.chunks[0];
    if (n === 0) return Buffer.alloc(0);
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.head += n;
      if (this.head === first.length) {
        this.chunks.shift();
        this.head = 0;
      }
      return out;
    }
    const out = allocate(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0];
      const count = Math.min(chunk.length - this.head, n - filled);
      chunk.copy(out, filled, this.head, this.head + count);
      filled += count;
      this.head += count;
      if (this.head === chunk.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
    return out;
  }

  /** Returns the next `n` bytes without removing them. The caller checks `length >= n` first. */
  peek(n: number): Buffer {
    const first = this.chunks[0];
    if (n === 0) return Buffer.alloc(0);
    if (first.length - this.head >= n) return first.subarray(this.head, this.head + n);
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let pos = this.head;
    for (const chunk of this.chunks) {
      const count = Math.min(chunk.length - pos, n - filled);
      chunk.copy(out, filled, pos, pos + count);
      filled += count;
      pos = 0;
      if (filled === n) break;
    }
    return out;
  }

  /** Drops `n` bytes without returning them (the payload of a request being rejected). */
  skip(n: number): void {
    let left = Math.min(n, this.total);
    this.total -= left;
    while (left > 0) {
      const chunk = this.chunks[0];
      const count = Math.min(chunk.length - this.head, left);
      left -= count;
      this.head += count;
      if (this.head === chunk.length) {
        this.chunks.shift();
        this.head = 0;
      }
    }
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.total = 0;
  }
}
