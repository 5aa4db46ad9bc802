/**
 * A cache layer with a limit (issue 11, item 4): it never keeps more data than the limit, gives
 * up the least recently used chunks first, punches them out of its file, and never lets a
 * chunk it gave up show through a read: every read equals the base, however reads and
 * evictions interleave.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AsifImage } from '../../src/formats/asif/index.js';
import { DiskImage } from '../../src/stack/disk-image.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
let dir: string;
let base: string;
let content: Buffer;

beforeAll(async () => {
  dir = await makeTempDir('stackbd-bounded-');
  base = path.join(dir, 'base.raw');
  content = randomBytes(24 * MiB);
  await fs.writeFile(base, content);
});
afterAll(() => removeDir(dir));

function cacheOf(image: DiskImage): AsifImage {
  const layer = image.stack.layers.find((l) => l.layerType === 'cache');
  if (!(layer instanceof AsifImage)) throw new Error('no ASIF cache layer');
  return layer;
}

/** Seeded choices, so a failure can be replayed. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe('a bounded cache layer', () => {
  it('keeps at most its limit, records it, and gives space back to the file system', async () => {
    const cachePath = path.join(dir, 'cache.asif');
    const image = await (await DiskImage.open(base)).appending({ path: cachePath, type: 'cache', cacheLimit: 4 * MiB });
    try {
      expect(cacheOf(image).cacheLimit).toBe(4 * MiB);
      const buf = Buffer.alloc(MiB);
      for (let offset = 0; offset < content.length; offset += MiB) {
        await image.stack.read(buf, offset);
        expect(buf.equals(content.subarray(offset, offset + MiB)), `read at ${offset}`).toBe(true);
      }
      await image.flush();
      expect(cacheOf(image).allocatedBytes()).toBeLessThanOrEqual(4 * MiB);
      expect(cacheOf(image).allocatedBytes()).toBeGreaterThan(0);
    } finally {
      await image.close();
    }
    // The metadata chunks (a few MiB) and at most the limit of data take space on disk.
    const st = await fs.stat(cachePath);
    expect(st.blocks * 512).toBeLessThanOrEqual(4 * MiB + 4 * MiB);
    const reopened = await DiskImage.open([base, cachePath]);
    try {
      expect(cacheOf(reopened).cacheLimit).toBe(4 * MiB);
      expect(cacheOf(reopened).allocatedBytes()).toBeLessThanOrEqual(4 * MiB);
      const all = Buffer.alloc(content.length);
      await reopened.stack.read(all, 0);
      expect(all.equals(content)).toBe(true);
    } finally {
      await reopened.close();
    }
  });

  it('gives up what was used least recently, not what is read again and again', async () => {
    const cachePath = path.join(dir, 'lru.asif');
    const image = await (await DiskImage.open(base)).appending({ path: cachePath, type: 'cache', cacheLimit: 6 * MiB });
    try {
      const hot = Buffer.alloc(MiB);
      const cold = Buffer.alloc(MiB);
      // Chunk 0 is read between every new chunk: it must stay while the others come and go.
      for (let c = 1; c < 24; c++) {
        await image.stack.read(hot, 0);
        await image.stack.read(cold, c * MiB);
        await image.flush();
      }
      const before = { ...image.stack.cacheStats };
      await image.stack.read(hot, 0);
      expect(image.stack.cacheStats.hitBytes - before.hitBytes).toBe(MiB);
      expect(image.stack.cacheStats.missBytes - before.missBytes).toBe(0);
    } finally {
      await image.close();
    }
  });

  it('reads equal the base while concurrent reads fill and evict, and after a reopen with a smaller limit', async () => {
    const cachePath = path.join(dir, 'race.asif');
    const image = await (await DiskImage.open(base)).appending({ path: cachePath, type: 'cache', cacheLimit: 2 * MiB });
    const next = random(7);
    const check = async (target: DiskImage, n: number): Promise<void> => {
      const jobs: Promise<void>[] = [];
      for (let i = 0; i < n; i++) {
        const length = 4096 * (1 + Math.floor(next() * 64));
        const offset = 512 * Math.floor((next() * (content.length - length)) / 512);
        jobs.push(
          (async () => {
            const buf = Buffer.alloc(length);
            await target.stack.read(buf, offset);
            expect(buf.equals(content.subarray(offset, offset + length)), `read ${offset}+${length}`).toBe(true);
          })(),
        );
        if (jobs.length >= 16) await Promise.all(jobs.splice(0));
      }
      await Promise.all(jobs);
      await target.flush();
    };
    try {
      await check(image, 400);
      expect(cacheOf(image).allocatedBytes()).toBeLessThanOrEqual(2 * MiB);
    } finally {
      await image.close();
    }
    const smaller = await DiskImage.open([base, cachePath], { cacheLimit: MiB });
    try {
      await check(smaller, 100);
      expect(cacheOf(smaller).allocatedBytes()).toBeLessThanOrEqual(MiB);
    } finally {
      await smaller.close();
    }
  });
});
