/**
 * Reconnect delays: exponential from `baseMs`, capped at `capMs`, with jitter (each delay is
 * drawn between half and all of its step) so that many clients of one restarted upstream do not
 * come back in lockstep.
 */

export interface Backoff {
  baseMs: number;
  capMs: number;
}

/** The delay before attempt `failures + 1` after `failures` failed ones (0 → no wait). */
export function backoffDelay(failures: number, backoff: Backoff, random: () => number): number {
  if (failures <= 0) return 0;
  const step = Math.min(backoff.capMs, backoff.baseMs * 2 ** Math.min(failures - 1, 30));
  return step / 2 + (random() * step) / 2;
}
