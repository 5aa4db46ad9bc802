/**
 * Which bytes of a structured READ reply have arrived: content chunks (data or hole) may come in
 * any order but must stay inside the request and must not overlap. Intervals are kept sorted and
 * merged where they touch, so a server sending in order costs one interval; the number of
 * separate intervals is capped so that a hostile server cannot make the bookkeeping unbounded.
 */

export type CoverageResult = 'ok' | 'overlap' | 'too-fragmented';

export class ReadCoverage {
  /** Starts and ends (exclusive) of disjoint, non-touching intervals, in order. */
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];
  covered = 0;

  constructor(private readonly maxIntervals: number) {}

  /** Records [start, end) (end > start); refuses a range that overlaps one already recorded. */
  add(start: number, end: number): CoverageResult {
    const { starts, ends } = this;
    // The first interval that ends after `start`: the only one that can overlap or follow.
    let lo = 0;
    let hi = ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (ends[mid] <= start) lo = mid + 1;
      else hi = mid;
    }
    if (lo < starts.length && starts[lo] < end) return 'overlap';
    const joinsPrevious = lo > 0 && ends[lo - 1] === start;
    const joinsNext = lo < starts.length && starts[lo] === end;
    if (joinsPrevious && joinsNext) {
      ends[lo - 1] = ends[lo];
      starts.splice(lo, 1);
      ends.splice(lo, 1);
    } else if (joinsPrevious) {
      ends[lo - 1] = end;
    } else if (joinsNext) {
      starts[lo] = start;
    } else {
      if (starts.length >= this.maxIntervals) return 'too-fragmented';
      starts.splice(lo, 0, start);
      ends.splice(lo, 0, end);
    }
    this.covered += end - start;
    return 'ok';
  }
}
