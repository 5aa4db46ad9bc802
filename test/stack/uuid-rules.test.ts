import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IncompatibleStackingError, InvalidBlockCountError } from '../../src/block/errors.js';
import { createAsif } from '../../src/formats/asif/index.js';
import { DiskImage } from '../../src/stack/disk-image.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const SIZE = 4 * 1024 * 1024;

describe('stacking rules (IncompatibleStackingError) and layer UUIDs', () => {
  let dir: string;
  let raw: string;
  let asifBase: string;
  let n = 0;
  const file = (name: string): string => path.join(dir, `${n++}-${name}`);

  beforeAll(async () => {
    dir = await makeTempDir();
    raw = path.join(dir, 'base.raw');
    await fs.writeFile(raw, Buffer.alloc(SIZE, 7));
    asifBase = path.join(dir, 'base.asif');
    await createAsif(asifBase, { blockCount: SIZE / 512 });
  });
  afterAll(() => removeDir(dir));

  it('records the parent UUID: none above RAW, the layer UUID of an ASIF layer below', async () => {
    const overRaw = await (await DiskImage.open(raw)).appending({ path: file('o.asif'), type: 'overlay' });
    expect(overRaw.parentUUID).toBeNull();
    expect(overRaw.layerType).toBe('overlay');
    expect(overRaw.layerUUID).toMatch(/^[0-9a-f-]{36}$/);
    await overRaw.close();
    const base = await DiskImage.open(asifBase);
    const baseUUID = base.layerUUID;
    const overAsif = await base.appending({ path: file('o.asif'), type: 'overlay' });
    expect(overAsif.parentUUID).toBe(baseUUID);
    expect(overAsif.layers.map((l) => l.layerType)).toEqual([null, 'overlay']);
    await overAsif.close();
  });

  it('refuses a layer made for another parent', async () => {
    const other = file('other.asif');
    await createAsif(other, { blockCount: SIZE / 512 });
    const layer = file('layer.asif');
    await (await (await DiskImage.open(other)).appending({ path: layer, type: 'overlay' })).close();
    await expect(DiskImage.open([asifBase, layer])).rejects.toBeInstanceOf(IncompatibleStackingError);
    await expect(DiskImage.open([raw, layer])).rejects.toThrow(/parent UUID/);
    const base = await DiskImage.open(asifBase);
    await expect(base.appending({ path: layer, existing: true })).rejects.toBeInstanceOf(IncompatibleStackingError);
    await base.close();
  });

  it('refuses RAW above the base, a second cache, and a standalone image as a layer', async () => {
    const extraRaw = file('x.raw');
    await fs.writeFile(extraRaw, Buffer.alloc(SIZE));
    await expect(DiskImage.open([asifBase, extraRaw])).rejects.toThrow(/RAW image can only be the base/);
    const cache = file('c.asif');
    const cached = await (await DiskImage.open(raw)).appending({ path: cache, type: 'cache' });
    await expect(cached.appending({ path: file('c2.asif'), type: 'cache' })).rejects.toBeInstanceOf(IncompatibleStackingError);
    await cached.close();
    const standalone = file('s.asif');
    await createAsif(standalone, { blockCount: SIZE / 512 });
    await expect(DiskImage.open([asifBase, standalone])).rejects.toBeInstanceOf(IncompatibleStackingError);
  });

  it('rotates the layer UUID on the first write after a read-write open, so old children are refused', async () => {
    const mid = file('mid.asif');
    const child = file('child.asif');
    let image = await (await DiskImage.open(asifBase)).appending({ path: mid, type: 'overlay' });
    image = await image.appending({ path: child, type: 'overlay' });
    await image.close();
    // Write to the middle layer on its own: it is a different disk now.
    const midImage = await DiskImage.open([asifBase, mid], { mode: 'readWrite' });
    const before = midImage.layerUUID;
    await midImage.stack.write(Buffer.alloc(4096, 1), 0);
    expect(midImage.layerUUID).not.toBe(before);
    await midImage.close();
    await expect(DiskImage.open([asifBase, mid, child])).rejects.toThrow(/parent UUID/);
    // Reading does not rotate.
    const reader = await DiskImage.open([asifBase, mid], { mode: 'readWrite' });
    const uuid = reader.layerUUID;
    await reader.stack.read(Buffer.alloc(512), 0);
    await reader.close();
    expect((await DiskImage.open([asifBase, mid])).layerUUID).toBe(uuid);
  });

  it('truncates the top layer; refuses a cache layer and bad block counts', async () => {
    const overlay = file('t.asif');
    let image = await (await DiskImage.open(raw)).appending({ path: overlay, type: 'overlay' });
    await image.close();
    image = await DiskImage.open([raw, overlay], { mode: 'readWrite' });
    await image.truncate((2 * SIZE) / 512);
    expect(image.blockCount).toBe((2 * SIZE) / 512);
    const tail = Buffer.alloc(512, 1);
    await image.stack.read(tail, SIZE + 512);
    expect(tail.every((b) => b === 0)).toBe(true);
    await expect(image.truncate(0)).rejects.toBeInstanceOf(InvalidBlockCountError);
    await expect(image.truncate(-5)).rejects.toBeInstanceOf(InvalidBlockCountError);
    await image.close();
    const cache = file('tc.asif');
    const cached = await (await DiskImage.open(raw)).appending({ path: cache, type: 'cache' });
    await expect(cached.truncate(SIZE / 512)).rejects.toBeInstanceOf(IncompatibleStackingError);
    await cached.close();
  });

  it('creates standalone images and refuses bad block counts and existing files', async () => {
    const created = file('new.asif');
    const image = await DiskImage.create({ path: created, format: 'asif', blockCount: 2048, blockSize: 4096 });
    expect([image.format, image.blockCount, image.blockSize, image.openMode, image.layerType, image.parentUUID]).toEqual([
      'asif',
      2048,
      4096,
      'readWrite',
      null,
      null,
    ]);
    await image.close();
    await expect(DiskImage.create({ path: created, format: 'asif', blockCount: 2048 })).rejects.toThrow(/EEXIST|exists/);
    await expect(DiskImage.create({ path: file('z.asif'), format: 'asif', blockCount: 0 })).rejects.toBeInstanceOf(InvalidBlockCountError);
    await expect(DiskImage.create({ path: file('z.asif'), format: 'asif', blockCount: 2 ** 50 })).rejects.toBeInstanceOf(InvalidBlockCountError);
  });
});
