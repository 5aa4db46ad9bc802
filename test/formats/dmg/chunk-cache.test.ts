/** The decoded-chunk cache: shared decodes, LRU order within a byte bound, a bounded number of decodes at once, failures not kept. */
import { describe, expect, it } from 'vitest';
import { ChunkCache } from '../../../src/formats/dmg/chunk-cache.js';

/** Decodes that finish when the test says so, counting how many run at once. */
function controlledDecoder(): { decode: (i: number) => Promise<Buffer>; finish: (i: number) => void; running: () => number; peak: () => number } {
  const pending = new Map<number, (b: Buffer) => void>();
  let running = 0;
  let peak = 0;
  return {
    decode: (i) =>
      new Promise<Buffer>((resolve) => {
        running++;
        peak = Math.max(peak, running);
        pending.set(i, (b) => {
          running--;
          resolve(b);
        });
      }),
    finish: (i) => pending.get(i)?.(Buffer.alloc(100, i)),
    running: () => running,
    peak: () => peak,
  };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('ChunkCache', () => {
  it('shares one decode between concurrent readers of a chunk', async () => {
    const cache = new ChunkCache(1000);
    const d = controlledDecoder();
    const reads = [cache.get(1, d.decode), cache.get(1, d.decode), cache.get(1, d.decode)];
    await tick();
    d.finish(1);
    const bufs = await Promise.all(reads);
    expect(cache.decodes).toBe(1);
    expect(bufs[0]).toBe(bufs[2]);
  });

  it('runs at most maxDecodes decodes at once; the others start as slots free up', async () => {
    const cache = new ChunkCache(10_000, 2);
    const d = controlledDecoder();
    const reads = [0, 1, 2, 3, 4].map((i) => cache.get(i, d.decode));
    await tick();
    expect(d.running()).toBe(2);
    for (let i = 0; i < 5; i++) {
      d.finish(i);
      await tick();
      await tick();
    }
    expect((await Promise.all(reads)).map((b) => b[0])).toEqual([0, 1, 2, 3, 4]);
    expect(d.peak()).toBe(2);
    expect(cache.decodes).toBe(5);
  });

  it('evicts the least recently used chunks beyond its byte bound, and does not keep failures', async () => {
    const cache = new ChunkCache(250);
    const decode = (i: number): Promise<Buffer> => Promise.resolve(Buffer.alloc(100, i));
    await cache.get(1, decode);
    await cache.get(2, decode);
    await cache.get(1, decode); // 1 is now the most recent
    await cache.get(3, decode); // pushes 2 out
    expect(cache.cachedBytes).toBe(200);
    expect(cache.decodes).toBe(3);
    await cache.get(1, decode);
    await cache.get(3, decode);
    expect(cache.decodes).toBe(3);
    await cache.get(2, decode);
    expect(cache.decodes).toBe(4);
    const failing = (): Promise<Buffer> => Promise.reject(new Error('damaged'));
    await expect(cache.get(9, failing)).rejects.toThrow('damaged');
    await expect(cache.get(9, failing)).rejects.toThrow('damaged');
    expect(cache.decodes).toBe(6);
    expect(cache.cachedBytes).toBe(200);
  });
});
