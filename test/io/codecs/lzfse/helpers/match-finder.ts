/**
 * Test-only: a greedy match finder for the test encoders. It remembers the last position of
 * every 4-byte hash and answers the longest match it can confirm at a position, trying the
 * previous distance first (so encoders can use the "repeat distance" forms).
 */
const HASH_BITS = 16;
export const MIN_MATCH = 4;

export interface Match {
  length: number;
  distance: number;
}

export class MatchFinder {
  private readonly head = new Int32Array(1 << HASH_BITS).fill(-1);
  private inserted = 0;

  constructor(private readonly data: Uint8Array) {}

  private hash(i: number): number {
    const d = this.data;
    const v = d[i] | (d[i + 1] << 8) | (d[i + 2] << 16) | (d[i + 3] << 24);
    return Math.imul(v, 0x9e3779b1) >>> (32 - HASH_BITS);
  }

  /** Remembers every position before `end` not remembered yet. */
  insertUpTo(end: number): void {
    const last = Math.min(end, this.data.length - MIN_MATCH + 1);
    for (; this.inserted < last; this.inserted++) this.head[this.hash(this.inserted)] = this.inserted;
  }

  private matchLength(i: number, distance: number, maxLength: number): number {
    const d = this.data;
    let n = 0;
    while (n < maxLength && d[i + n] === d[i + n - distance]) n++;
    return n;
  }

  /** The best match at `i` no longer than `maxLength`, within `maxDistance`; null if none. */
  find(i: number, maxLength: number, maxDistance: number, previousDistance: number): Match | null {
    if (maxLength < MIN_MATCH || i + MIN_MATCH > this.data.length) return null;
    this.insertUpTo(i);
    let best: Match | null = null;
    if (previousDistance > 0 && previousDistance <= i) {
      const length = this.matchLength(i, previousDistance, maxLength);
      if (length >= MIN_MATCH) best = { length, distance: previousDistance };
    }
    const candidate = this.head[this.hash(i)];
    if (candidate >= 0 && i - candidate <= maxDistance) {
      const length = this.matchLength(i, i - candidate, maxLength);
      if (length >= MIN_MATCH && (best === null || length > best.length + 1)) best = { length, distance: i - candidate };
    }
    return best;
  }
}
