/**
 * A run is a contiguous byte range of one state. Every layer describes its own allocation as
 * runs, and the stack merges them:
 * - `data`: the layer holds bytes for the range;
 * - `zero`: the layer says the range reads as zeros (and hides whatever lies below);
 * - `absent`: the layer holds nothing; in a stack the layer below answers, at the bottom it
 *   reads as zeros.
 */
export type RunState = 'data' | 'zero' | 'absent';

export interface Run {
  offset: number;
  length: number;
  state: RunState;
}

/** Appends a run, merging it into the previous one when they touch and share a state. */
export function pushRun(runs: Run[], offset: number, length: number, state: RunState): void {
  if (length <= 0) return;
  const last = runs[runs.length - 1];
  if (last && last.state === state && last.offset + last.length === offset) {
    last.length += length;
    return;
  }
  runs.push({ offset, length, state });
}

/** Byte range helpers. Offsets are numbers: every size stackbd maps is below 2^53. */
export function rangesOverlap(aOff: number, aLen: number, bOff: number, bLen: number): boolean {
  return aOff < bOff + bLen && bOff < aOff + aLen;
}
