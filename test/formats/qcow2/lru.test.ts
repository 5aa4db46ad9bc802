/** The byte-bounded LRU cache of qcow2 L2 tables and decompressed clusters. */
import { describe, expect, it } from 'vitest';
import { LruCache } from '../../../src/formats/qcow2/lru.js';

describe('LruCache', () => {
  it('evicts the least recently used entries once the weight passes the capacity', () => {
    const cache = new LruCache<number, Buffer>(100, (b) => b.length);
    cache.set(1, Buffer.alloc(40));
    cache.set(2, Buffer.alloc(40));
    expect(cache.get(1)).toBeDefined(); // 1 is now the most recent
    cache.set(3, Buffer.alloc(40));
    expect(cache.get(2)).toBeUndefined();
    expect(cache.get(1)).toBeDefined();
    expect(cache.get(3)).toBeDefined();
    expect(cache.weight).toBe(80);
  });

  it('keeps the newest entry even when it alone is over the capacity', () => {
    const cache = new LruCache<number, Buffer>(100, (b) => b.length);
    cache.set(1, Buffer.alloc(10));
    cache.set(2, Buffer.alloc(500));
    expect(cache.size).toBe(1);
    expect(cache.get(2)?.length).toBe(500);
    cache.set(2, Buffer.alloc(20));
    expect(cache.weight).toBe(20);
  });

  it('shares one load among concurrent misses and does not keep a failed one', async () => {
    const cache = new LruCache<string, number>(10, () => 1);
    let loads = 0;
    const load = (): Promise<number> => new Promise((r) => setTimeout(() => r(++loads), 5));
    const [a, b] = await Promise.all([cache.obtain('k', load), cache.obtain('k', load)]);
    expect([a, b, loads]).toEqual([1, 1, 1]);
    expect(await cache.obtain('k', load)).toBe(1);
    await expect(cache.obtain('bad', () => Promise.reject(new Error('read failed')))).rejects.toThrow('read failed');
    expect(await cache.obtain('bad', () => Promise.resolve(7))).toBe(7);
  });
});
