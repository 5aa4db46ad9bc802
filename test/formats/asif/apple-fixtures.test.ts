import { readFileSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { checkAsif, createAsif, openAsif } from '../../../src/formats/asif/index.js';
import { HEADER_FIELDS } from '../../../src/formats/asif/header.js';
import { loadMap, mappedChunk } from '../../../src/formats/asif/load.js';
import { throwingSink } from '../../../src/formats/asif/problems.js';
import { openFdFile } from '../../../src/io/fd-file.js';
import { APPLE_FIXTURES, loadAppleFixture } from '../helpers/fixtures.js';
import { useTmpDir } from '../helpers/tmp-dir.js';

const tmp = useTmpDir('apple');
const MiB = 1024 * 1024;

/** Values read from the fixtures with a hex dump (see the fixtures' README). */
const EXPECTED = {
  '10GB': { layerUUID: 'd9c2082c-983f-4877-9e66-32960451150d', stableUUID: '47d4f646-0893-411d-8138-550ad7227273' },
  '100GB': { layerUUID: null, stableUUID: null },
} as const;

function writeFixture(name: keyof typeof APPLE_FIXTURES): string {
  const path = tmp(`${name}.asif`);
  writeFileSync(path, loadAppleFixture(name));
  return path;
}

describe.each(Object.keys(APPLE_FIXTURES) as Array<keyof typeof APPLE_FIXTURES>)('Apple blank %s image', (name) => {
  const { sectorCount } = APPLE_FIXTURES[name];

  it('opens with the values Apple wrote', async () => {
    const path = writeFixture(name);
    const image = await openAsif(path, { readOnly: true });
    try {
      expect(image.format).toBe('asif');
      expect(image.blockCount).toBe(sectorCount);
      expect(image.blockSize).toBe(512);
      expect(image.chunkSize).toBe(MiB);
      expect(image.size).toBe(sectorCount * 512);
      expect(image.layerType).toBeNull();
      expect(image.parentUUID).toBeNull();
      expect(image.layerUUID).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      expect(image.stableUUID).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      expect(image.stableUUID).not.toBe(image.layerUUID);
      const expected = EXPECTED[name];
      if (expected.layerUUID) expect(image.layerUUID).toBe(expected.layerUUID);
      if (expected.stableUUID) expect(image.stableUUID).toBe(expected.stableUUID);
      expect(image.allocatedBytes()).toBe(0);
      expect(await image.fileSize()).toBe(4 * MiB);
      expect(await image.map(0, image.size)).toEqual([{ offset: 0, length: image.size, state: 'absent' }]);
    } finally {
      await image.close();
    }
  });

  it('reads zeros everywhere', async () => {
    const image = await openAsif(writeFixture(name), { readOnly: true });
    try {
      for (const offset of [0, MiB - 512, 126 * 1024 * MiB - 4096, image.size - 65536]) {
        const buf = Buffer.alloc(65536, 0xaa);
        await image.read(buf, Math.min(offset, image.size - buf.length));
        expect(buf.every((b) => b === 0)).toBe(true);
      }
    } finally {
      await image.close();
    }
  });

  it('maps its metadata chunk through a status-11 entry and a bitmap of two sectors', async () => {
    const file = await openFdFile(writeFixture(name), { readOnly: true });
    try {
      const map = await loadMap(file, throwingSink(file.path));
      expect(map).not.toBeNull();
      if (!map) return;
      expect(map.header.metadataChunk).toBe(0xffffffff);
      expect(map.geometry.directoryEntries).toBe(33289);
      expect(map.geometry.groupsPerTable).toBe(63);
      expect(map.header.directoryOffsets).toEqual([0x200, 0x41400]);
      expect(map.sequences).toEqual([0n, 1n]);
      expect(map.active).toBe(1);
      expect([...map.tables.keys()]).toEqual([33288]);
      const meta = mappedChunk(map, 0xffffffff);
      expect(meta).toEqual({ status: 0b11, chunk: 2, slicePosition: 3 * MiB + 0xffe00 });
      const slice = Buffer.alloc(512);
      await file.read(slice, 3 * MiB + 0xffe00);
      expect(slice[0]).toBe(0x05);
      expect(slice.subarray(1).every((b) => b === 0)).toBe(true);
    } finally {
      await file.close();
    }
  });

  it('checks clean', async () => {
    const report = await checkAsif(writeFixture(name));
    expect(report.errors).toEqual([]);
    expect(report.leakedChunks).toEqual([]);
    expect(report.doubleReferenced).toEqual([]);
    expect(report.clean).toBe(true);
    expect(report.chunkStates).toEqual({ neverWritten: Math.ceil((sectorCount * 512) / MiB), full: 0, partial: 0, discarded: 0 });
    expect(report.bitmapSectorStates).toEqual({ written: 2, notWritten: 2046, reserved: 0, invalid: 0 });
  });

  it('stays byte for byte the same when opened read-only', async () => {
    const path = writeFixture(name);
    const before = readFileSync(path);
    const image = await openAsif(path, { readOnly: true });
    await image.read(Buffer.alloc(4096), 0);
    await image.flush();
    await image.close();
    expect(readFileSync(path).equals(before)).toBe(true);
  });

  it('is what createAsif writes, apart from the GUID and the stable uuid', async () => {
    const apple = loadAppleFixture(name);
    const path = tmp(`${name}-ours.asif`);
    await createAsif(path, { blockCount: sectorCount });
    const ours = readFileSync(path);
    expect(ours.length).toBe(apple.length);
    const stable = apple.indexOf('<key>stable uuid</key>\n\t\t<string>', 2 * MiB) + '<key>stable uuid</key>\n\t\t<string>'.length;
    expect(stable).toBeGreaterThan(2 * MiB);
    const masks: Array<[number, number]> = [
      [HEADER_FIELDS.guid, 16],
      [stable, 36],
    ];
    for (const buf of [apple, ours]) for (const [at, n] of masks) buf.fill(0, at, at + n);
    const firstDifference = ours.findIndex((b, i) => b !== apple[i]);
    expect(firstDifference).toBe(-1);
  });
});

it('createAsif writes the sector count asked for, and only it differs between sizes', async () => {
  const a = tmp('a.asif');
  const b = tmp('b.asif');
  await createAsif(a, { blockCount: 1000 });
  await createAsif(b, { blockCount: 2 ** 40 });
  const [x, y] = [readFileSync(a), readFileSync(b)];
  expect(x.readBigUInt64BE(HEADER_FIELDS.sectorCount)).toBe(1000n);
  expect(y.readBigUInt64BE(HEADER_FIELDS.sectorCount)).toBe(2n ** 40n);
});
