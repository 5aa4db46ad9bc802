/**
 * Appending a match: `length` bytes, each equal to the byte `distance` before it. Overlapping
 * matches (distance < length) replicate the last `distance` bytes. Callers have checked
 * 1 <= distance <= pos and pos + length <= out.length.
 */

/** Below this length a byte loop beats the call overhead of copyWithin. */
const SHORT_COPY = 32;

export function copyMatch(out: Uint8Array, pos: number, distance: number, length: number): void {
  const src = pos - distance;
  if (length < SHORT_COPY) {
    for (let i = 0; i < length; i++) out[pos + i] = out[src + i];
    return;
  }
  // copyWithin copies as if through a temporary buffer, so each call may only read bytes that
  // are already written: copy the period once, then ever larger runs of whole periods.
  let done = 0;
  while (done < length) {
    const n = Math.min(length - done, pos + done - src);
    out.copyWithin(pos + done, src, src + n);
    done += n;
  }
}

/** Appends source[from, from + length) at out[pos]. */
export function copyLiterals(out: Uint8Array, pos: number, source: Uint8Array, from: number, length: number): void {
  if (length < SHORT_COPY) {
    for (let i = 0; i < length; i++) out[pos + i] = source[from + i];
    return;
  }
  out.set(source.subarray(from, from + length), pos);
}
