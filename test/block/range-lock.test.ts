import { describe, expect, it } from 'vitest';
import { RangeLock } from '../../src/block/range-lock.js';

describe('RangeLock', () => {
  it('orders overlapping holders by arrival and lets disjoint ones run', async () => {
    const lock = new RangeLock();
    const order: string[] = [];
    const a = await lock.acquire(0, 10);
    const bP = lock.acquire(5, 10).then((r) => (order.push('b'), r));
    const cP = lock.acquire(100, 10).then((r) => (order.push('c'), r));
    const dP = lock.acquire(0, 20).then((r) => (order.push('d'), r));
    const c = await cP;
    expect(order).toEqual(['c']);
    a();
    const b = await bP;
    expect(order).toEqual(['c', 'b']);
    b();
    (await dP)();
    c();
    expect(order).toEqual(['c', 'b', 'd']);
    expect(lock.size).toBe(0);
  });

  it('waits for an older holder whose overlap a newer one does not cover', async () => {
    const lock = new RangeLock();
    const older = await lock.acquire(0, 10); // [0,10)
    const newer = await lock.acquire(20, 10); // [20,30), disjoint: runs at once
    let got = false;
    const across = lock.acquire(5, 20).then((r) => ((got = true), r)); // [5,25): needs both
    newer();
    await new Promise((r) => setTimeout(r, 10));
    expect(got).toBe(false);
    older();
    (await across)();
    expect(got).toBe(true);
  });

  it('handles tens of thousands of holders queued on one range, in order', async () => {
    const lock = new RangeLock();
    const first = await lock.acquire(0, 4096);
    const order: number[] = [];
    const all = Array.from({ length: 20000 }, (_, i) =>
      lock.acquire(0, 1 << 20).then((release) => {
        order.push(i);
        release();
      }),
    );
    first();
    await Promise.all(all);
    expect(order).toEqual(Array.from({ length: 20000 }, (_, i) => i));
    expect(lock.size).toBe(0);
  });
});
