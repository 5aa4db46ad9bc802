/**
 * Warming a cache layer (issue 11): `warmStack` fills the cache ahead of time, several pieces at
 * once; it skips what the cache holds (an interrupted warm started again reads only what is
 * left) and what a layer above holds; it warms only the ranges asked for; it stops at a bounded
 * cache's limit instead of evicting what it stored; and NBD_CMD_CACHE (Stack.cache) uses it.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAsif } from '../../src/formats/asif/index.js';
import type { AsifImage } from '../../src/formats/asif/index.js';
import { openImage } from '../../src/formats/open-image.js';
import { Stack } from '../../src/stack/stack.js';
import { normalizeRanges, warmStack } from '../../src/stack/warm.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { allDataBase, sparseContent, type AllDataBase } from './helpers/all-data-base.js';

const MiB = 1024 * 1024;
let dir: string;
let n = 0;

beforeAll(async () => {
  dir = await makeTempDir('stackbd-warm-');
});
afterAll(() => removeDir(dir));

async function makeStack(content: Buffer, cacheLimit?: number): Promise<{ stack: Stack; base: AllDataBase; cache: AsifImage; overlay: AsifImage }> {
  const id = n++;
  const cachePath = path.join(dir, `cache-${id}.asif`);
  const overlayPath = path.join(dir, `overlay-${id}.asif`);
  const blockCount = content.length / 512;
  await createAsif(cachePath, { blockCount, layerType: 'cache', parentUUID: null, cacheLimit: cacheLimit ?? null });
  await createAsif(overlayPath, { blockCount, layerType: 'overlay', parentUUID: null });
  const base = allDataBase(content);
  const cache = (await openImage(cachePath, { readOnly: false })) as AsifImage;
  const overlay = (await openImage(overlayPath, { readOnly: false })) as AsifImage;
  return { stack: new Stack([base, cache, overlay]), base, cache, overlay };
}

const DATA = new Set([0, 1, 5, 6, 7, 12, 20, 21, 30]);

describe('warmStack', () => {
  it('fills the whole cache, data as data and zero chunks as zeros; a second warm reads nothing', async () => {
    const content = sparseContent(32, DATA);
    const { stack, base, cache } = await makeStack(content);
    const progress: number[] = [];
    const r = await warmStack(stack, null, { jobs: 4, onProgress: (done, total) => progress.push(done / total) });
    expect(r).toMatchObject({ requestedBytes: 32 * MiB, readBytes: 32 * MiB, cachedBytes: 0, hiddenBytes: 0, storedDataBytes: 9 * MiB, storedZeroBytes: 23 * MiB, stopped: 'done', leftBytes: 0 });
    expect(progress[progress.length - 1]).toBe(1);
    expect(base.bytesRead).toBe(32 * MiB);
    // Several pieces were read at once.
    expect(base.maxInFlight).toBeGreaterThan(1);
    expect(cache.allocatedBytes()).toBe(9 * MiB);
    const again = await warmStack(stack, null);
    expect(again).toMatchObject({ readBytes: 0, cachedBytes: 32 * MiB });
    expect(base.bytesRead).toBe(32 * MiB);
    const all = Buffer.alloc(content.length);
    await stack.read(all, 0);
    expect(all.equals(content)).toBe(true);
    expect(base.bytesRead).toBe(32 * MiB);
    await stack.close();
  });

  it('resumes: a warm interrupted part way, started again, reads only what is left', async () => {
    const content = sparseContent(32, DATA);
    const { stack, base } = await makeStack(content);
    const abort = new AbortController();
    const first = await warmStack(stack, null, { jobs: 2, signal: abort.signal, onProgress: (done) => done >= 12 * MiB && abort.abort() });
    expect(first.stopped).toBe('aborted');
    expect(first.leftBytes).toBeGreaterThan(0);
    expect(first.readBytes).toBe(base.bytesRead);
    const second = await warmStack(stack, null, { jobs: 2 });
    expect(second.stopped).toBe('done');
    expect(second.cachedBytes).toBe(first.readBytes);
    // No byte was read from below twice.
    expect(base.bytesRead).toBe(32 * MiB);
    expect(first.readBytes + second.readBytes).toBe(32 * MiB);
    await stack.close();
  });

  it('warms only the ranges asked for (widened to sectors), and skips what the overlay holds', async () => {
    const content = sparseContent(16, new Set([1, 2, 3, 8]));
    const { stack, base, cache, overlay } = await makeStack(content);
    await stack.write(Buffer.alloc(MiB, 9), 2 * MiB);
    const r = await warmStack(stack, [
      { offset: MiB + 100, length: 3 * MiB },
      { offset: 8 * MiB, length: 4096 },
      { offset: 64 * MiB, length: MiB },
    ]);
    // [MiB, 4 MiB + 512) asked for, 1 MiB of it held by the overlay; 4 KiB at 8 MiB.
    expect(r.requestedBytes).toBe(3 * MiB + 512 + 4096);
    expect(r.hiddenBytes).toBe(MiB);
    expect(r.readBytes).toBe(2 * MiB + 512 + 4096);
    expect(base.readLog.every(([offset]) => offset < 2 * MiB || offset >= 3 * MiB)).toBe(true);
    expect(await cache.map(0, 5 * MiB)).toEqual([
      { offset: 0, length: MiB, state: 'absent' },
      { offset: MiB, length: MiB, state: 'data' },
      { offset: 2 * MiB, length: MiB, state: 'absent' },
      { offset: 3 * MiB, length: MiB + 512, state: 'data' },
      { offset: 4 * MiB + 512, length: MiB - 512, state: 'absent' },
    ]);
    expect((await cache.map(8 * MiB, MiB))[0]).toEqual({ offset: 8 * MiB, length: 4096, state: 'data' });
    expect((await overlay.map(2 * MiB, MiB))[0].state).toBe('data');
    await stack.close();
  });

  it('stops at a bounded cache\'s limit (with a warning) instead of evicting what it stored', async () => {
    const content = sparseContent(32, new Set(Array.from({ length: 32 }, (_, i) => i)));
    const { stack, cache } = await makeStack(content, 10 * MiB);
    const warnings: string[] = [];
    const r = await warmStack(stack, null, { jobs: 3, onWarning: (w) => warnings.push(w) });
    expect(warnings.join('\n')).toMatch(/more than the 10485760 bytes of data the cache keeps/);
    expect(r.stopped).toBe('limit');
    expect(r.storedDataBytes).toBeLessThanOrEqual(10 * MiB);
    expect(r.storedDataBytes).toBeGreaterThan(0);
    expect(r.leftBytes).toBe(32 * MiB - r.readBytes);
    // Nothing it stored was given up again.
    expect(cache.allocatedBytes()).toBe(r.storedDataBytes);
    await stack.close();
  });

  it('refuses a stack without a cache layer, and one whose cache is open read-only', async () => {
    const content = sparseContent(4, new Set([0]));
    await expect(warmStack(new Stack([allDataBase(content)]), null)).rejects.toThrow(/no cache layer/);
    const cachePath = path.join(dir, `ro-${n++}.asif`);
    await createAsif(cachePath, { blockCount: content.length / 512, layerType: 'cache', parentUUID: null });
    const cache = await openImage(cachePath, { readOnly: true });
    await expect(warmStack(new Stack([allDataBase(content), cache]), null)).rejects.toThrow(/open read-only/);
    await cache.close();
  });

  it('NBD_CMD_CACHE prefetches with the same pipelined warm (several pieces in flight), only the whole sectors asked for', async () => {
    const content = sparseContent(32, DATA);
    const { stack, base, cache } = await makeStack(content);
    await stack.cache(0, 16 * MiB);
    expect(base.maxInFlight).toBeGreaterThan(1);
    expect(base.bytesRead).toBe(16 * MiB);
    expect(await cache.map(0, 16 * MiB)).toEqual(expect.arrayContaining([{ offset: 0, length: 2 * MiB, state: 'data' }]));
    expect(cache.allocatedBytes()).toBe(6 * MiB);
    await stack.cache(20 * MiB + 1000, 100_000);
    expect((await cache.map(20 * MiB, MiB)).filter((r) => r.state === 'data')).toEqual([{ offset: 20 * MiB + 1024, length: 99_840, state: 'data' }]);
    await stack.close();
  });
});

describe('normalizeRanges', () => {
  it('clips to the disk, widens to the alignment, sorts and merges', () => {
    expect(
      normalizeRanges(
        [
          { offset: 5000, length: 100 },
          { offset: 0, length: 10 },
          { offset: 600, length: 4000 },
          { offset: 9000, length: 5000 },
          { offset: 20_000, length: 1 },
        ],
        10_240,
        512,
      ),
    ).toEqual([
      { offset: 0, length: 5120 + 512 - 512 },
      { offset: 8704, length: 10_240 - 8704 },
    ]);
  });
});
