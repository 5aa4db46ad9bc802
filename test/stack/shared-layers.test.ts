/**
 * The registry of shared read-only layers: stacks over one base get one open of it (one fd, one
 * lock entry), closing a stack gives its handle back, the last close closes the base; opens
 * that race share one; a layer that opens writable (a cache layer) is not shared; a failed open
 * is not remembered; a second close of one handle does not close the layer under the others.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Layer } from '../../src/formats/layer.js';
import { openImage } from '../../src/formats/open-image.js';
import { lockDirOf } from '../../src/io/lock-dir.js';
import { DiskImage } from '../../src/stack/disk-image.js';
import { SharedLayers } from '../../src/stack/shared-layers.js';
import { useTmpDir } from '../formats/helpers/tmp-dir.js';

const tmp = useTmpDir('shared-layers');
const MiB = 1024 * 1024;

async function fdCount(): Promise<number> {
  return (await fs.readdir('/proc/self/fd')).length;
}

async function lockEntries(file: string): Promise<string[]> {
  return fs.readdir(lockDirOf(file)).catch(() => []);
}

describe('SharedLayers', () => {
  it('gives every stack over one base the same open of it, and closes it with the last stack', async () => {
    const base = tmp('base.raw');
    const content = randomBytes(2 * MiB);
    await fs.writeFile(base, content);
    const overlays: string[] = [];
    for (let i = 0; i < 5; i++) {
      const overlay = tmp(`o${i}.asif`);
      const image = await DiskImage.open(base);
      await (await image.appending({ path: overlay, type: 'overlay' })).close();
      overlays.push(overlay);
    }
    const shared = new SharedLayers();
    const before = await fdCount();
    const images = await Promise.all(overlays.map((o) => DiskImage.open([{ path: base, format: 'raw' }, { path: o, format: 'asif' }], { mode: 'readWrite', shared })));
    expect(shared.size).toBe(1);
    // Five overlays and one base: six fds, not ten; one reader entry in the base's lock directory.
    expect((await fdCount()) - before).toBe(6);
    expect((await lockEntries(base)).filter((n) => n.startsWith('r-'))).toHaveLength(1);
    // Each stack reads the base and writes its own overlay.
    for (const [i, image] of images.entries()) {
      await image.stack.write(Buffer.alloc(4096, i + 1), 0);
      const buf = Buffer.alloc(8192);
      await image.stack.read(buf, 0);
      expect(buf.subarray(0, 4096).every((b) => b === i + 1)).toBe(true);
      expect(buf.subarray(4096).equals(content.subarray(4096, 8192))).toBe(true);
    }
    for (const image of images.slice(0, 4)) await image.close();
    expect(shared.size).toBe(1);
    const last = images[4];
    const buf = Buffer.alloc(4096);
    await last.stack.read(buf, MiB);
    expect(buf.equals(content.subarray(MiB, MiB + 4096))).toBe(true);
    await last.close();
    expect(shared.size).toBe(0);
    expect(await fdCount()).toBe(before);
    expect(await lockEntries(base)).toEqual([]);
  });

  it('shares a racing open, never shares a writable layer, forgets a failed open, and ignores a second close', async () => {
    const file = tmp('plain.raw');
    await fs.writeFile(file, Buffer.alloc(MiB));
    const shared = new SharedLayers();
    let opens = 0;
    const open = async (): Promise<Layer> => {
      opens++;
      return openImage(file, { readOnly: true, format: 'raw' });
    };
    const [a, b] = await Promise.all([shared.acquire(file, 'raw', open), shared.acquire(file, 'raw', open)]);
    expect(opens).toBe(1);
    await a.close();
    await a.close();
    // b still reads: the second close of a did not release b's hold.
    await b.read(Buffer.alloc(512), 0);
    await b.close();
    expect(shared.size).toBe(0);

    const writable = tmp('rw.raw');
    await fs.writeFile(writable, Buffer.alloc(MiB));
    const w1 = await shared.acquire(writable, 'raw', () => openImage(writable, { readOnly: false, format: 'raw' }));
    expect(w1.readOnly).toBe(false);
    expect(shared.size).toBe(0);
    await w1.close();

    const broken = tmp('broken.asif');
    await fs.writeFile(broken, Buffer.alloc(4096));
    await expect(shared.acquire(broken, 'asif', () => openImage(broken, { readOnly: true, format: 'asif' }))).rejects.toThrow();
    expect(shared.size).toBe(0);
    expect(path.basename(broken)).toBe('broken.asif');
  });
});
