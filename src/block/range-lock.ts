/**
 * Orders operations on overlapping byte ranges by arrival. A holder registers its range at the
 * moment it arrives (synchronously), then waits for every earlier holder whose range overlaps.
 * Operations on disjoint ranges never wait for each other.
 *
 * The server uses one per export so that overlapping writes land in the order they arrived,
 * across all connections: a write still running for a dead connection can never land after a
 * newer write to the same range from a new one.
 */
import { rangesOverlap } from './runs.js';

interface Holder {
  start: number;
  end: number;
  released: Promise<void>;
}

export type Release = () => void;

export class RangeLock {
  private readonly holders = new Set<Holder>();

  /**
   * Registers [offset, offset + length) now and resolves once all earlier overlapping holders
   * have released. The returned function releases this holder; call it exactly once.
   */
  acquire(offset: number, length: number): Promise<Release> {
    const start = offset;
    const end = offset + Math.max(length, 1);
    const waitFor: Promise<void>[] = [];
    for (const h of this.holders) {
      if (rangesOverlap(start, end - start, h.start, h.end - h.start)) waitFor.push(h.released);
    }
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const holder: Holder = { start, end, released };
    this.holders.add(holder);
    const done: Release = () => {
      this.holders.delete(holder);
      release();
    };
    if (waitFor.length === 0) return Promise.resolve(done);
    return Promise.all(waitFor).then(() => done);
  }

  get size(): number {
    return this.holders.size;
  }
}
