import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Layer } from '../../src/formats/layer.js';
import { openImage } from '../../src/formats/open-image.js';
import { DiskImage } from '../../src/stack/disk-image.js';
import { Stack } from '../../src/stack/stack.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const SIZE = 8 * 1024 * 1024;

/** Wraps a layer and counts the bytes read from it. */
function counting(layer: Layer): Layer & { bytesRead: number } {
  const wrapper = Object.create(layer) as Layer & { bytesRead: number };
  wrapper.bytesRead = 0;
  wrapper.read = async (buf: Buffer, offset: number) => {
    wrapper.bytesRead += buf.length;
    return layer.read(buf, offset);
  };
  return wrapper;
}

describe('cache layer', () => {
  let dir: string;
  let base: string;
  let content: Buffer;
  let n = 0;

  beforeAll(async () => {
    dir = await makeTempDir();
    base = path.join(dir, 'base.raw');
    content = randomBytes(SIZE);
    await fs.writeFile(base, content);
  });
  afterAll(() => removeDir(dir));

  /** base + cache + overlay files; returns their paths. */
  async function makeStack(): Promise<string[]> {
    const id = n++;
    const cache = path.join(dir, `cache-${id}.asif`);
    const overlay = path.join(dir, `overlay-${id}.asif`);
    let image = await DiskImage.open(base);
    image = await image.appending({ path: cache, type: 'cache' });
    image = await image.appending({ path: overlay, type: 'overlay' });
    await image.close();
    return [base, cache, overlay];
  }

  async function openCounted(paths: string[]): Promise<{ stack: Stack; baseLayer: Layer & { bytesRead: number }; cache: Layer }> {
    const baseLayer = counting(await openImage(paths[0], { readOnly: true }));
    const cache = await openImage(paths[1], { readOnly: false });
    const overlay = await openImage(paths[2], { readOnly: false });
    return { stack: new Stack([baseLayer, cache, overlay]), baseLayer, cache };
  }

  it('reads a range from the base once; the second read comes from the cache', async () => {
    const paths = await makeStack();
    const { stack, baseLayer, cache } = await openCounted(paths);
    const buf = Buffer.alloc(3 * 1024 * 1024 + 4096);
    await stack.read(buf, 512 * 1024);
    expect(buf.equals(content.subarray(512 * 1024, 512 * 1024 + buf.length))).toBe(true);
    const first = baseLayer.bytesRead;
    expect(first).toBe(buf.length);
    await stack.flush(); // waits for the background fill
    const again = Buffer.alloc(buf.length);
    await stack.read(again, 512 * 1024);
    expect(again.equals(buf)).toBe(true);
    expect(baseLayer.bytesRead).toBe(first);
    expect((await cache.map(512 * 1024, buf.length)).every((r) => r.state === 'data')).toBe(true);
    await stack.close();
    // The fill is durable: a fresh open serves it without the base.
    const reopened = await openCounted(paths);
    await reopened.stack.read(again, 512 * 1024);
    expect(again.equals(buf)).toBe(true);
    expect(reopened.baseLayer.bytesRead).toBe(0);
    await reopened.stack.close();
  });

  it('never stores data written above it, and a fill racing a write above returns correct data', async () => {
    const paths = await makeStack();
    const { stack, cache } = await openCounted(paths);
    const fresh = randomBytes(1024 * 1024);
    const read = Buffer.alloc(1024 * 1024);
    // Read (which fills the cache from the base) and overwrite the same range at once.
    const [, ,] = await Promise.all([stack.read(read, 2 * 1024 * 1024), stack.write(fresh, 2 * 1024 * 1024)]);
    const readOk = read.equals(content.subarray(2 * 1024 * 1024, 3 * 1024 * 1024)) || read.equals(fresh);
    expect(readOk).toBe(true);
    await stack.flush();
    const after = Buffer.alloc(1024 * 1024);
    await stack.read(after, 2 * 1024 * 1024);
    expect(after.equals(fresh)).toBe(true);
    // Whatever the cache holds there is the base's data, never the write.
    const cached = Buffer.alloc(1024 * 1024);
    await cache.read(cached, 2 * 1024 * 1024);
    const cacheRuns = await cache.map(2 * 1024 * 1024, 1024 * 1024);
    for (const run of cacheRuns.filter((r) => r.state === 'data')) {
      const from = run.offset - 2 * 1024 * 1024;
      expect(cached.subarray(from, from + run.length).equals(content.subarray(run.offset, run.offset + run.length))).toBe(true);
    }
    // A write to a range never read leaves the cache empty there.
    await stack.write(randomBytes(65536), 6 * 1024 * 1024);
    await stack.flush();
    expect(await cache.map(6 * 1024 * 1024, 65536)).toEqual([{ offset: 6 * 1024 * 1024, length: 65536, state: 'absent' }]);
    await stack.close();
  });

  it('prefetches with NBD_CMD_CACHE, and its layer UUID never changes', async () => {
    const paths = await makeStack();
    const inspect = await DiskImage.open(paths);
    const before = inspect.layers[1].layerUUID;
    await inspect.close();
    const { stack, baseLayer } = await openCounted(paths);
    await stack.cache(0, SIZE);
    const readAfterPrefetch = baseLayer.bytesRead;
    expect(readAfterPrefetch).toBe(SIZE);
    const all = Buffer.alloc(SIZE);
    await stack.read(all, 0);
    expect(all.equals(content)).toBe(true);
    expect(baseLayer.bytesRead).toBe(readAfterPrefetch);
    await stack.close();
    const image = await DiskImage.open(paths);
    expect(image.layers[1].layerUUID).toBe(before);
    await image.close();
  });

  it('serves a stack whose top is the cache read-only, and still fills the cache', async () => {
    const id = n++;
    const cache = path.join(dir, `cachetop-${id}.asif`);
    const image = await (await DiskImage.open(base)).appending({ path: cache, type: 'cache' });
    expect(image.openMode).toBe('readOnly');
    await image.close();
    await expect(DiskImage.open([base, cache], { mode: 'readWrite' })).rejects.toThrow(/cache layer cannot be the writable top/);
    const served = await DiskImage.open([base, cache], { mode: 'readWrite', readOnlyWhenCacheTop: true });
    expect(served.stack.readOnly).toBe(true);
    await expect(served.stack.write(Buffer.alloc(512), 0)).rejects.toThrow(/read-only/);
    const buf = Buffer.alloc(65536);
    await served.stack.read(buf, 0);
    await served.close();
    const check = await openImage(cache, { readOnly: true });
    expect((await check.map(0, 65536))[0].state).toBe('data');
    await check.close();
  });
});
