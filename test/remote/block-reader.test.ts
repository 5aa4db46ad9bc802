/** Coalescing, merging, the bytes-bounded block cache and sequential readahead, over a scripted fetch. */
import { describe, expect, it } from 'vitest';
import { BlockCache } from '../../src/remote/block-cache.js';
import { BlockReader } from '../../src/remote/block-reader.js';
import { Readahead } from '../../src/remote/readahead.js';

const B = 4096;

function pattern(size: number): Buffer {
  const buf = Buffer.alloc(size);
  for (let i = 0; i < size; i++) buf[i] = (i * 7 + (i >> 12)) & 0xff;
  return buf;
}

/** A fetch that records ranges and completes only when released, so concurrency is explicit. */
function scriptedFetch(content: Buffer) {
  const calls: Array<[number, number]> = [];
  const waiting: Array<() => void> = [];
  let failNext = 0;
  /** A copy in its own memory (Buffer.from of a small range would share the pool's). */
  const own = (from: number, to: number): Buffer => {
    const b = Buffer.alloc(to - from);
    content.copy(b, 0, from, to);
    return b;
  };
  const fetch = (offset: number, length: number): Promise<Buffer[]> => {
    calls.push([offset, length]);
    const fail = failNext > 0;
    if (fail) failNext--;
    return new Promise<Buffer[]>((resolve, reject) => {
      // In two pieces, as a body arrives in several: blocks may span them.
      const cut = offset + Math.floor(length / 3);
      waiting.push(() => (fail ? reject(new Error('boom')) : resolve([own(offset, cut), own(cut, offset + length)])));
    });
  };
  return {
    fetch,
    calls,
    releaseAll: () => waiting.splice(0).forEach((go) => go()),
    failNext: (n: number) => (failNext = n),
  };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

async function settle<T>(p: Promise<T>, script: { releaseAll(): void }): Promise<T> {
  for (let i = 0; i < 10; i++) {
    await tick();
    script.releaseAll();
  }
  return p;
}

describe('BlockReader', () => {
  const size = 64 * B + 100;
  const content = pattern(size);
  const opts = { size, blockSize: B, maxRequestBytes: 4 * B, cacheBytes: 8 * B, readaheadMaxBytes: 0 };

  it('fetches a block once however many readers want it at the same time', async () => {
    const s = scriptedFetch(content);
    const reader = new BlockReader(s.fetch, opts);
    const bufs = Array.from({ length: 10 }, () => Buffer.alloc(100));
    const reads = bufs.map((b, i) => reader.read(b, 5 * B + i * 300));
    await settle(Promise.all(reads), s);
    expect(s.calls).toEqual([[5 * B, B]]);
    bufs.forEach((b, i) => expect(b.equals(content.subarray(5 * B + i * 300, 5 * B + i * 300 + 100))).toBe(true));
  });

  it('merges adjacent missing blocks up to the largest request, around cached and in-flight ones', async () => {
    const s = scriptedFetch(content);
    const reader = new BlockReader(s.fetch, opts);
    await settle(reader.read(Buffer.alloc(10), 3 * B), s); // block 3 now cached
    s.calls.length = 0;
    const inflight = reader.read(Buffer.alloc(10), 9 * B); // block 9 being fetched
    const buf = Buffer.alloc(12 * B);
    const big = reader.read(buf, 0); // blocks 0..11
    await settle(Promise.all([inflight, big]), s);
    expect(s.calls).toEqual([
      [9 * B, B],
      [0, 3 * B],
      [4 * B, 4 * B],
      [8 * B, B],
      [10 * B, 2 * B],
    ]);
    expect(buf.equals(content.subarray(0, 12 * B))).toBe(true);
  });

  it('reads the short last block of an object that is not a whole number of blocks', async () => {
    const s = scriptedFetch(content);
    const reader = new BlockReader(s.fetch, opts);
    const buf = Buffer.alloc(200);
    await settle(reader.read(buf, size - 200), s);
    expect(buf.equals(content.subarray(size - 200))).toBe(true);
    expect(s.calls).toEqual([[63 * B, B + 100]]);
  });

  it('fails every reader of a failed fetch, keeps nothing of it, and fetches again next time', async () => {
    const s = scriptedFetch(content);
    const reader = new BlockReader(s.fetch, opts);
    s.failNext(1);
    const a = reader.read(Buffer.alloc(10), 2 * B);
    const b = reader.read(Buffer.alloc(10), 2 * B + 50);
    const results = await settle(Promise.allSettled([a, b]), s);
    expect(results.map((r) => (r.status === 'rejected' ? (r.reason as Error).message : 'ok'))).toEqual(['boom', 'boom']);
    const buf = Buffer.alloc(10);
    await settle(reader.read(buf, 2 * B), s);
    expect(buf.equals(content.subarray(2 * B, 2 * B + 10))).toBe(true);
    expect(s.calls).toEqual([
      [2 * B, B],
      [2 * B, B],
    ]);
  });

  it('serves repeated reads from the cache until it is full, then evicts the least recently used', async () => {
    const s = scriptedFetch(content);
    const reader = new BlockReader(s.fetch, { ...opts, cacheBytes: 2 * B });
    for (const block of [1, 2, 1, 3, 1, 2]) await settle(reader.read(Buffer.alloc(10), block * B), s);
    // 1, 2 fetched; 1 hit; 3 fetched (evicts 2); 1 hit; 2 fetched again.
    expect(s.calls.map(([o]) => o / B)).toEqual([1, 2, 3, 2]);
  });

  it('reads ahead while reads are sequential, with a growing window, and not for random reads', async () => {
    const s = scriptedFetch(content);
    const reader = new BlockReader(s.fetch, { ...opts, readaheadMaxBytes: 8 * B, maxRequestBytes: 16 * B, cacheBytes: 64 * B });
    for (let i = 0; i < 12; i++) await settle(reader.read(Buffer.alloc(B), i * B), s);
    const blocksFetched = s.calls.reduce((n, [, l]) => n + l / B, 0);
    const demand = s.calls.filter(([, l]) => l === B).length;
    expect(s.calls.length).toBeLessThan(12);
    expect(blocksFetched).toBeGreaterThan(12);
    // The first read, before the stream is recognised (the second goes out with its readahead).
    expect(demand).toBe(1);
    const t = scriptedFetch(content);
    const random = new BlockReader(t.fetch, { ...opts, readaheadMaxBytes: 8 * B, cacheBytes: 64 * B });
    for (const block of [40, 3, 27, 11, 55, 19, 33, 7]) await settle(random.read(Buffer.alloc(B), block * B), t);
    expect(t.calls.map(([o, l]) => [o / B, l / B])).toEqual([40, 3, 27, 11, 55, 19, 33, 7].map((b) => [b, 1]));
  });
});

describe('Readahead', () => {
  it('starts the window at four reads (two blocks at least), doubles it up to the maximum and asks in batches', () => {
    const ra = new Readahead(B, 16 * B, 1000 * B);
    expect(ra.onRead(0, B)).toBeNull();
    expect(ra.onRead(B, B)).toEqual({ offset: 2 * B, length: 4 * B });
    expect(ra.onRead(2 * B, B)).toEqual({ offset: 6 * B, length: 5 * B });
    expect(ra.onRead(3 * B, B)).toEqual({ offset: 11 * B, length: 9 * B });
    expect(ra.onRead(4 * B, B)).toBeNull(); // window 16 blocks, 15 still ahead: no new request
    // Small reads (a guest's 512-byte sectors) start at two blocks (here ending on a block).
    const small = new Readahead(B, 16 * B, 1000 * B);
    small.onRead(0, 512);
    expect(small.onRead(512, 512)).toEqual({ offset: 1024, length: 2 * B - 1024 });
  });

  it('ends its batches on multiples of the largest request once the window is that large', () => {
    const ra = new Readahead(B, 16 * B, 1000 * B, 4 * B);
    ra.onRead(0, B);
    // Window 4 blocks: 2..6 is cut back to the boundary at 4 (still half a window).
    expect(ra.onRead(B, B)).toEqual({ offset: 2 * B, length: 2 * B });
    const batches: Array<{ offset: number; length: number }> = [];
    for (let i = 2; i < 60; i++) {
      const r = ra.onRead(i * B, B);
      if (r) batches.push(r);
    }
    expect(batches.length).toBeGreaterThan(4);
    // Every batch ends on a boundary, so every one after the first starts on one too.
    for (const r of batches) expect((r.offset + r.length) % (4 * B)).toBe(0);
    for (const r of batches) expect(r.offset % (4 * B)).toBe(0);
    // Contiguous, never more than a window and a request ahead of the reads.
    for (let i = 1; i < batches.length; i++) expect(batches[i].offset).toBe(batches[i - 1].offset + batches[i - 1].length);
  });

  it('stops when the reads stop being sequential and tracks parallel streams apart', () => {
    const ra = new Readahead(B, 16 * B, 1000 * B);
    ra.onRead(0, B);
    ra.onRead(500 * B, B);
    expect(ra.onRead(B, B)).not.toBeNull();
    expect(ra.onRead(501 * B, B)).not.toBeNull();
    expect(ra.onRead(300 * B, B)).toBeNull();
    expect(ra.onRead(700 * B, B)).toBeNull();
  });

  it('never reads ahead past the end of the object', () => {
    const ra = new Readahead(B, 16 * B, 10 * B);
    ra.onRead(6 * B, B);
    expect(ra.onRead(7 * B, B)).toEqual({ offset: 8 * B, length: 2 * B });
    expect(ra.onRead(8 * B, B)).toBeNull();
  });
});

describe('BlockCache', () => {
  it('never holds more bytes than its bound, and refuses a block larger than it', () => {
    const cache = new BlockCache(3 * B);
    for (let i = 0; i < 10; i++) cache.set(i, [Buffer.alloc(B)]);
    expect(cache.usedBytes).toBe(3 * B);
    expect(cache.get(9)).toBeDefined();
    expect(cache.get(6)).toBeUndefined();
    cache.set(20, [Buffer.alloc(4 * B)]);
    expect(cache.get(20)).toBeUndefined();
    expect(cache.usedBytes).toBe(3 * B);
  });

  it('counts a request buffer its blocks are views of once, and frees it only when its last block goes', () => {
    const cache = new BlockCache(8 * B);
    const request = (): Buffer[] => {
      const whole = Buffer.alloc(4 * B);
      return [0, 1, 2, 3].map((k) => whole.subarray(k * B, (k + 1) * B));
    };
    request().forEach((b, k) => cache.set(k, [b]));
    expect(cache.usedBytes).toBe(4 * B);
    request().forEach((b, k) => cache.set(4 + k, [b]));
    expect(cache.usedBytes).toBe(8 * B);
    // Block 1 used again: its request buffer stays while block 1 is kept.
    expect(cache.get(1)).toBeDefined();
    request().forEach((b, k) => cache.set(8 + k, [b]));
    expect(cache.usedBytes).toBeLessThanOrEqual(8 * B);
    expect(cache.get(8)).toBeDefined();
    expect([0, 2, 3].map((i) => cache.get(i))).toEqual([undefined, undefined, undefined]);
    // A view of a buffer larger than the bound is not kept.
    cache.set(20, [Buffer.alloc(16 * B).subarray(0, B)]);
    expect(cache.get(20)).toBeUndefined();
  });
});
