/**
 * A BlockFile in memory, for fast tests. With a `random` source each call completes after a
 * random number of event-loop turns, and its bytes are copied at completion, so concurrent
 * requests finish out of order the way they do on a real thread pool.
 */
import type { BlockFile } from '../../../src/io/block-file.js';

export class MemFile implements BlockFile {
  private data: Buffer;
  private length: number;
  closed = false;

  constructor(
    readonly path: string = 'mem.asif',
    initial: Uint8Array = new Uint8Array(0),
    readonly readOnly = false,
    private readonly random: (() => number) | null = null,
  ) {
    this.data = Buffer.alloc(Math.max(initial.length, 1 << 16));
    this.data.set(initial);
    this.length = initial.length;
  }

  /** A copy of the file's bytes. */
  bytes(): Buffer {
    return Buffer.from(this.data.subarray(0, this.length));
  }

  /** Another handle on a copy of the same bytes (for reopening in another mode). */
  copy(options: { readOnly?: boolean; random?: (() => number) | null } = {}): MemFile {
    return new MemFile(this.path, this.bytes(), options.readOnly ?? this.readOnly, options.random ?? this.random);
  }

  async read(buf: Uint8Array, position: number): Promise<void> {
    await this.delay();
    buf.fill(0);
    if (position < this.length) buf.set(this.data.subarray(position, Math.min(this.length, position + buf.length)));
  }

  async write(buf: Uint8Array, position: number): Promise<void> {
    if (this.readOnly) throw Object.assign(new Error('read-only'), { code: 'EBADF' });
    await this.delay();
    this.put(buf, position);
  }

  /** Writes at once, without delay (replaying a recorded write). */
  put(buf: Uint8Array, position: number): void {
    const end = position + buf.length;
    if (end > this.data.length) {
      const grown = Buffer.alloc(Math.max(end, this.data.length * 2));
      grown.set(this.data.subarray(0, this.length));
      this.data = grown;
    }
    this.data.set(buf, position);
    this.length = Math.max(this.length, end);
  }

  async sync(): Promise<void> {
    await this.delay();
  }

  async size(): Promise<number> {
    return this.length;
  }

  async truncate(length: number): Promise<void> {
    await this.delay();
    this.cut(length);
  }

  cut(length: number): void {
    if (length < this.length) this.data.fill(0, length, this.length);
    else if (length > this.data.length) this.put(new Uint8Array(0), length);
    this.length = length;
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private async delay(): Promise<void> {
    if (!this.random) return;
    const turns = Math.floor(this.random() * 3);
    for (let i = 0; i < turns; i++) await new Promise<void>((r) => setImmediate(r));
  }
}

/** A small deterministic PRNG (mulberry32) so failures replay from their seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
