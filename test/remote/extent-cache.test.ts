/** The cache of an upstream's allocation: lookups stop at the first unknown byte, stores replace and merge, the size stays bounded. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Run } from '../../src/block/runs.js';
import { ExtentCache } from '../../src/remote/extent-cache.js';

const run = (offset: number, length: number, state: Run['state']): Run => ({ offset, length, state });

describe('ExtentCache', () => {
  it('answers only from a known offset on, up to the first gap, cut at the end asked', () => {
    const cache = new ExtentCache(100);
    cache.store([run(0, 100, 'data'), run(100, 50, 'zero')]);
    cache.store([run(300, 10, 'data')]);
    expect(cache.lookup(20, 120)).toEqual([run(20, 80, 'data'), run(100, 20, 'zero')]);
    expect(cache.lookup(120, 400)).toEqual([run(120, 30, 'zero')]);
    expect(cache.lookup(150, 400)).toEqual([]);
    expect(cache.lookup(305, 400)).toEqual([run(305, 5, 'data')]);
  });

  it('replaces what it knew where a new answer lands, keeping the parts outside, and merges neighbours', () => {
    const cache = new ExtentCache(100);
    cache.store([run(0, 100, 'data')]);
    cache.store([run(200, 100, 'zero')]);
    cache.store([run(50, 100, 'zero')]);
    expect(cache.lookup(0, 300)).toEqual([run(0, 50, 'data'), run(50, 100, 'zero')]);
    cache.store([run(150, 50, 'zero')]);
    expect(cache.lookup(0, 300)).toEqual([run(0, 50, 'data'), run(50, 250, 'zero')]);
    expect(cache.size).toBe(2);
    cache.store([run(60, 10, 'data')]);
    expect(cache.lookup(0, 300)).toEqual([run(0, 50, 'data'), run(50, 10, 'zero'), run(60, 10, 'data'), run(70, 230, 'zero')]);
  });

  it('forgets everything rather than grow past its bound', () => {
    const cache = new ExtentCache(4);
    cache.store([run(0, 1, 'data'), run(1, 1, 'zero'), run(2, 1, 'data')]);
    expect(cache.size).toBe(3);
    cache.store([run(10, 1, 'data'), run(11, 1, 'zero')]);
    expect(cache.size).toBe(2);
    expect(cache.lookup(0, 5)).toEqual([]);
    expect(cache.lookup(10, 12)).toEqual([run(10, 1, 'data'), run(11, 1, 'zero')]);
  });

  it('agrees with a byte-by-byte model over random stores and lookups', () => {
    const SPAN = 64;
    const storeArb = fc.record({
      start: fc.integer({ min: 0, max: SPAN - 1 }),
      lengths: fc.array(fc.tuple(fc.integer({ min: 1, max: 9 }), fc.boolean()), { minLength: 1, maxLength: 5 }),
    });
    fc.assert(
      fc.property(fc.array(storeArb, { minLength: 1, maxLength: 12 }), fc.integer({ min: 0, max: SPAN - 1 }), (stores, probe) => {
        const cache = new ExtentCache(1000);
        const model: Array<Run['state'] | null> = Array.from({ length: SPAN + 60 }, () => null);
        for (const { start, lengths } of stores) {
          const runs: Run[] = [];
          let at = start;
          for (const [length, zero] of lengths) {
            runs.push(run(at, length, zero ? 'zero' : 'data'));
            for (let i = at; i < at + length; i++) model[i] = zero ? 'zero' : 'data';
            at += length;
          }
          cache.store(runs);
        }
        const got = cache.lookup(probe, model.length);
        const flat: Array<Run['state'] | null> = [];
        for (const r of got) for (let i = 0; i < r.length; i++) flat.push(r.state);
        const expected: Array<Run['state'] | null> = [];
        for (let i = probe; i < model.length && model[i] !== null; i++) expected.push(model[i]);
        expect(flat).toEqual(expected);
        // Runs come out merged: no two neighbours share a state.
        got.forEach((r, i) => i > 0 && expect(r.state).not.toBe(got[i - 1].state));
      }),
      { numRuns: 500, seed: 20240611 },
    );
  });
});
