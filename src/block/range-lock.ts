/**
 * Orders operations on overlapping byte ranges by arrival. A holder registers its range at the
 * moment it arrives (synchronously), then waits for the earlier holders whose ranges overlap.
 * Operations on disjoint ranges never wait for each other.
 *
 * The server uses one per export so that overlapping writes land in the order they arrived,
 * across all connections: a write still running for a dead connection can never land after a
 * newer write to the same range from a new one.
 *
 * Waiting for every earlier overlapping holder is quadratic when a client queues thousands of
 * requests on one range. It is also unnecessary: an earlier holder whose overlap with the new
 * range lies inside the ranges of newer holders already waited for is waited for through them
 * (each of those waits for it, since they overlap it). So the scan goes from the newest holder
 * back and stops as soon as the newer holders cover the whole new range; usually one holder.
 */
import { rangesOverlap } from './runs.js';

interface Holder {
  start: number;
  end: number;
  released: Promise<void>;
  done: boolean;
}

export type Release = () => void;

/** Sorted, merged intervals: what the holders collected so far cover. */
class Coverage {
  private readonly spans: Array<[number, number]> = [];

  add(start: number, end: number): void {
    this.spans.push([start, end]);
    this.spans.sort((a, b) => a[0] - b[0]);
    const merged: Array<[number, number]> = [];
    for (const [s, e] of this.spans) {
      const last = merged[merged.length - 1];
      if (last && s <= last[1]) last[1] = Math.max(last[1], e);
      else merged.push([s, e]);
    }
    this.spans.splice(0, this.spans.length, ...merged);
  }

  covers(start: number, end: number): boolean {
    return this.spans.some(([s, e]) => s <= start && end <= e);
  }
}

export class RangeLock {
  /** Oldest first; released holders are dropped lazily. */
  private holders: Holder[] = [];
  private active = 0;

  /**
   * Registers [offset, offset + length) now and resolves once all earlier overlapping holders
   * have released. The returned function releases this holder; call it exactly once.
   */
  acquire(offset: number, length: number): Promise<Release> {
    const start = offset;
    const end = offset + Math.max(length, 1);
    const waitFor: Promise<void>[] = [];
    const covered = new Coverage();
    for (let i = this.holders.length - 1; i >= 0; i--) {
      const h = this.holders[i];
      if (h.done || !rangesOverlap(start, end - start, h.start, h.end - h.start)) continue;
      const overlapStart = Math.max(start, h.start);
      const overlapEnd = Math.min(end, h.end);
      if (covered.covers(overlapStart, overlapEnd)) continue;
      waitFor.push(h.released);
      covered.add(h.start, h.end);
      if (covered.covers(start, end)) break;
    }
    let resolveReleased!: () => void;
    const released = new Promise<void>((resolve) => {
      resolveReleased = resolve;
    });
    const holder: Holder = { start, end, released, done: false };
    this.holders.push(holder);
    this.active++;
    const done: Release = () => {
      if (holder.done) return;
      holder.done = true;
      this.active--;
      // Drop released holders once they are most of the list, keeping the cost amortised.
      if (this.active * 2 < this.holders.length) this.holders = this.holders.filter((x) => !x.done);
      resolveReleased();
    };
    if (waitFor.length === 0) return Promise.resolve(done);
    if (waitFor.length === 1) return waitFor[0].then(() => done);
    return Promise.all(waitFor).then(() => done);
  }

  get size(): number {
    return this.active;
  }
}
