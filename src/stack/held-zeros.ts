/**
 * The all-zero pieces of cache chunks that reads have seen but that are not stored yet, so that
 * a chunk read piece by piece (a client reads 256 KiB at a time, a chunk is 1 MiB) can still be
 * stored as one zero chunk (a map change) instead of a chunk of written zeros.
 *
 * - Stores, per chunk: the merged byte ranges seen zero, and whether a piece of it held data.
 * - A chunk whose every byte was seen zero is complete (the caller stores a zero chunk); a chunk
 *   known to hold data takes its zero pieces at once (they are written as zeros with the data).
 * - Bounded: at most `maxChunks` chunks are remembered, least recently touched given up first;
 *   the ranges of a chunk given up are handed back to be stored as they are.
 */

export type ByteSpan = readonly [start: number, end: number];

interface HeldChunk {
  /** Sorted, disjoint, merged [start, end) ranges seen zero. */
  spans: Array<[number, number]>;
  hasData: boolean;
}

export type ZeroPieceOutcome =
  /** Store this piece now (as zeros): its chunk holds data anyway. */
  | { action: 'store' }
  /** The whole chunk [start, end) was seen zero: store it as a zero chunk. */
  | { action: 'chunk'; start: number; end: number }
  /** Kept back. */
  | { action: 'held' };

export class HeldZeros {
  private readonly chunks = new Map<number, HeldChunk>();

  constructor(
    private readonly unit: number,
    private readonly size: number,
    private readonly maxChunks = 1024,
  ) {}

  /** True when pieces are held back (a flush must store them). */
  get holding(): boolean {
    for (const c of this.chunks.values()) if (c.spans.length > 0) return true;
    return false;
  }

  /** A piece [start, end) inside one chunk, all zeros. `released` gets ranges to store now. */
  zeroPiece(start: number, end: number, released: ByteSpan[]): ZeroPieceOutcome {
    const index = Math.floor(start / this.unit);
    const held = this.touch(index, released);
    if (held.hasData) return { action: 'store' };
    addSpan(held.spans, start, end);
    const chunkStart = index * this.unit;
    const chunkEnd = Math.min(this.size, chunkStart + this.unit);
    if (held.spans.length === 1 && held.spans[0][0] <= chunkStart && held.spans[0][1] >= chunkEnd) {
      this.chunks.delete(index);
      return { action: 'chunk', start: chunkStart, end: chunkEnd };
    }
    return { action: 'held' };
  }

  /** A piece of chunk `index` holds data: its held zero pieces go to `released`. */
  dataPiece(index: number, released: ByteSpan[]): void {
    const held = this.touch(index, released);
    held.hasData = true;
    released.push(...held.spans);
    held.spans = [];
  }

  /** Every held range, to be stored now; nothing is remembered afterwards. */
  takeAll(): ByteSpan[] {
    const out: ByteSpan[] = [];
    for (const c of this.chunks.values()) out.push(...c.spans);
    this.chunks.clear();
    return out;
  }

  private touch(index: number, released: ByteSpan[]): HeldChunk {
    let held = this.chunks.get(index);
    if (held) this.chunks.delete(index);
    else held = { spans: [], hasData: false };
    this.chunks.set(index, held);
    while (this.chunks.size > this.maxChunks) {
      const [oldest, chunk] = this.chunks.entries().next().value as [number, HeldChunk];
      this.chunks.delete(oldest);
      released.push(...chunk.spans);
    }
    return held;
  }
}

/** Adds [start, end) to sorted disjoint spans, merging what it touches. */
function addSpan(spans: Array<[number, number]>, start: number, end: number): void {
  let i = 0;
  while (i < spans.length && spans[i][1] < start) i++;
  let s = start;
  let e = end;
  let j = i;
  while (j < spans.length && spans[j][0] <= e) {
    s = Math.min(s, spans[j][0]);
    e = Math.max(e, spans[j][1]);
    j++;
  }
  spans.splice(i, j - i, [s, e]);
}
