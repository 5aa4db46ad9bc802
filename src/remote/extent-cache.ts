/**
 * What a read-only upstream said about its allocation, kept so that the stack's map-then-read
 * of every request does not cost two round trips. A base never changes while it is served (a
 * changed upstream is refused), so answers stay valid.
 *
 * - Stores: sorted, disjoint runs, merged where they touch with the same state.
 * - Invariant: the number of runs stays at most `maxRuns`; past it, everything is forgotten
 *   and the next lookups ask the upstream again.
 */
import { pushRun, type Run } from '../block/runs.js';

export class ExtentCache {
  private runs: Run[] = [];

  constructor(private readonly maxRuns: number) {}

  /** Index of the first run that ends after `offset`. */
  private firstEndingAfter(offset: number): number {
    let lo = 0;
    let hi = this.runs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const r = this.runs[mid];
      if (r.offset + r.length <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The known runs from `offset` on, without a gap, cut at `end`; empty when `offset` itself is unknown. */
  lookup(offset: number, end: number): Run[] {
    const out: Run[] = [];
    let pos = offset;
    for (let i = this.firstEndingAfter(offset); i < this.runs.length && pos < end; i++) {
      const r = this.runs[i];
      if (r.offset > pos) break;
      const stop = Math.min(end, r.offset + r.length);
      pushRun(out, pos, stop - pos, r.state);
      pos = stop;
    }
    return out;
  }

  /** Records runs that cover one contiguous range, replacing what was known there. */
  store(answer: readonly Run[]): void {
    // A prefix of an answer is still a contiguous range of knowledge.
    const fresh = answer.length > this.maxRuns ? answer.slice(0, this.maxRuns) : answer;
    if (fresh.length === 0) return;
    const start = fresh[0].offset;
    const last = fresh[fresh.length - 1];
    const end = last.offset + last.length;
    if (this.runs.length + fresh.length > this.maxRuns) this.runs = [];
    const from = this.firstEndingAfter(start);
    let to = from;
    while (to < this.runs.length && this.runs[to].offset < end) to++;
    const merged: Run[] = [];
    const before = this.runs[from - 1];
    const first = this.runs[from];
    // Runs cut by the new range keep their parts outside it.
    if (first && first.offset < start) pushRun(merged, first.offset, start - first.offset, first.state);
    for (const r of fresh) pushRun(merged, r.offset, r.length, r.state);
    const lastOld = this.runs[to - 1];
    if (to > from && lastOld.offset + lastOld.length > end) pushRun(merged, end, lastOld.offset + lastOld.length - end, lastOld.state);
    if (before && before.state === merged[0].state && before.offset + before.length === merged[0].offset) {
      before.length += merged[0].length;
      merged.shift();
    }
    const after = this.runs[to];
    // When the new runs all went into `before`, it is `before` that may now touch `after`.
    const tail = merged.length > 0 ? merged[merged.length - 1] : before;
    if (after && tail && tail.state === after.state && tail.offset + tail.length === after.offset) {
      tail.length += after.length;
      to++;
    }
    this.runs.splice(from, to - from, ...merged);
  }

  get size(): number {
    return this.runs.length;
  }
}
