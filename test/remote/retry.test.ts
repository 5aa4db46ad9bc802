/** The retry schedule: exponential backoff with equal jitter, Retry-After honoured and capped, no retry on final errors. */
import { describe, expect, it } from 'vitest';
import { backoffDelay, DEFAULT_BACKOFF, parseRetryAfter, RetryableError, withRetries, type Clock } from '../../src/remote/retry.js';

function recordingClock(randoms: number[]): Clock & { slept: number[] } {
  const slept: number[] = [];
  let i = 0;
  return { slept, now: () => 1_000_000, random: () => randoms[i++ % randoms.length], sleep: async (ms) => void slept.push(ms) };
}

/** An attempt that always throws `make(callNumber)`, counting its calls. */
function alwaysFailing(make: (n: number) => Error): { attempt: () => Promise<never>; calls: () => number } {
  let calls = 0;
  return {
    attempt: async () => {
      calls++;
      throw make(calls);
    },
    calls: () => calls,
  };
}

describe('backoffDelay', () => {
  it('doubles the step each attempt up to the cap, half fixed and half random', () => {
    const policy = { baseMs: 100, maxMs: 1000, maxRetryAfterMs: 5000 };
    expect([0, 1, 2, 3, 4, 5].map((n) => backoffDelay(n, policy, 0, null))).toEqual([50, 100, 200, 400, 500, 500]);
    expect([0, 1, 2, 3, 4, 5].map((n) => backoffDelay(n, policy, 0.999999, null))).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect(backoffDelay(2, policy, 0.5, null)).toBe(300);
  });

  it('waits what Retry-After asks, capped', () => {
    const policy = { baseMs: 100, maxMs: 1000, maxRetryAfterMs: 5000 };
    expect(backoffDelay(0, policy, 0.5, 2000)).toBe(2000);
    expect(backoffDelay(0, policy, 0.5, 3_600_000)).toBe(5000);
    expect(backoffDelay(3, policy, 0.5, 0)).toBe(0);
  });
});

describe('parseRetryAfter', () => {
  it('reads seconds and HTTP dates, and ignores nonsense', () => {
    const now = Date.parse('2025-01-01T00:00:00Z');
    expect(parseRetryAfter('3', now)).toBe(3000);
    expect(parseRetryAfter('Wed, 01 Jan 2025 00:00:10 GMT', now)).toBe(10_000);
    expect(parseRetryAfter('Tue, 31 Dec 2024 00:00:10 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeNull();
    expect(parseRetryAfter(undefined, now)).toBeNull();
  });
});

describe('withRetries', () => {
  it('retries retryable failures with the schedule, then succeeds', async () => {
    const clock = recordingClock([0, 0.5, 1 - 1e-9]);
    let calls = 0;
    const result = await withRetries(
      async () => {
        calls++;
        if (calls === 2) throw new RetryableError('busy', 1500);
        if (calls < 4) throw new RetryableError('reset');
        return 'ok';
      },
      5,
      DEFAULT_BACKOFF,
      clock,
    );
    expect(result).toBe('ok');
    expect(calls).toBe(4);
    // attempt 0: random 0 -> 50; attempt 1: Retry-After 1500 (random drawn but unused); attempt 2: random 1 -> 400
    expect(clock.slept).toEqual([50, 1500, 400]);
  });

  it('gives up after retries + 1 attempts with the last error', async () => {
    const clock = recordingClock([0]);
    const failing = alwaysFailing((n) => new RetryableError(`failure ${n}`));
    await expect(withRetries(failing.attempt, 3, DEFAULT_BACKOFF, clock)).rejects.toThrow('failure 4');
    expect(failing.calls()).toBe(4);
    expect(clock.slept).toEqual([50, 100, 200]);
  });

  it('never retries other errors', async () => {
    const clock = recordingClock([0]);
    const failing = alwaysFailing(() => new Error('412'));
    await expect(withRetries(failing.attempt, 5, DEFAULT_BACKOFF, clock)).rejects.toThrow('412');
    expect(failing.calls()).toBe(1);
    expect(clock.slept).toEqual([]);
  });
});
