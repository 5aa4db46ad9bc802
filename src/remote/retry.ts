/**
 * When to try a failed request again, and how long to wait: exponential backoff with jitter,
 * or the server's Retry-After (capped) when it sent one. Time and randomness come from a Clock
 * so the schedule can be tested without waiting.
 */

export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
  /** Uniform in [0, 1). */
  random(): number;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  random: () => Math.random(),
};

export interface BackoffPolicy {
  baseMs: number;
  maxMs: number;
  /** The longest Retry-After honoured; longer ones are cut to this. */
  maxRetryAfterMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 100, maxMs: 5_000, maxRetryAfterMs: 30_000 };

/**
 * Milliseconds to wait before retry number `attempt` (0 = the first retry): "equal jitter",
 * half of the exponential step fixed and half random, so clients that failed together spread
 * out but none retries at once. A Retry-After wins when given (it is what the server asked).
 */
export function backoffDelay(attempt: number, policy: BackoffPolicy, random: number, retryAfterMs: number | null): number {
  if (retryAfterMs !== null) return Math.min(Math.max(retryAfterMs, 0), policy.maxRetryAfterMs);
  const step = Math.min(policy.maxMs, policy.baseMs * 2 ** attempt);
  return Math.round(step / 2 + (random * step) / 2);
}

/** A Retry-After header (seconds, or an HTTP date) in milliseconds from `now`; null if absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now: number): number | null {
  if (value === undefined) return null;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

/** A failure worth another attempt; `retryAfterMs` when the server said how long to wait. */
export class RetryableError extends Error {
  override name = 'RetryableError';
  constructor(
    message: string,
    readonly retryAfterMs: number | null = null,
  ) {
    super(message);
  }
}

/**
 * Runs `attempt` until it succeeds, throws something other than a RetryableError, or has
 * failed `retries + 1` times; then the last error is thrown.
 */
export async function withRetries<T>(attempt: (n: number) => Promise<T>, retries: number, policy: BackoffPolicy, clock: Clock): Promise<T> {
  for (let n = 0; ; n++) {
    try {
      return await attempt(n);
    } catch (err) {
      if (!(err instanceof RetryableError) || n >= retries) throw err;
      await clock.sleep(backoffDelay(n, policy, clock.random(), err.retryAfterMs));
    }
  }
}
