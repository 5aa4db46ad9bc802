/**
 * The DMG layer: map, random access against the whole decoded disk, the chunk cache (a read
 * decodes only its chunks, concurrent reads share one decode, the cache stays within its
 * bound), the read-only contract, pin and details, and the rarer shapes of UDIF images built
 * here: xz (ULMO) chunks, comments and zero-fill entries, the binary resource fork, the koly at
 * offset 0 and the UDRW stub.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { deflateSync } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RequestError } from '../../../src/block/errors.js';
import { checkDmg, openDmg } from '../../../src/formats/dmg/index.js';
import { ChunkType } from '../../../src/formats/dmg/layout.js';
import { openImage } from '../../../src/formats/open-image.js';
import { DiskImage } from '../../../src/stack/disk-image.js';
import { requireTool } from '../../helpers/require-tool.js';
import { useTmpDir } from '../helpers/tmp-dir.js';
import { buildDmg, type TestPartition } from './build-dmg.js';
import { DMG_FIXTURES, fixturePath, readWhole, sha256 } from './dmg-fixtures.js';

const tmp = useTmpDir('dmg-image');
const MiB = 1024 * 1024;
const S = 512;

describe('map', () => {
  it('reports data for stored chunks and zero for ignore chunks, merged, with maxRuns', async () => {
    const image = await openDmg(fixturePath('compression-zlib.dmg'));
    try {
      expect(await image.map(0, image.size)).toEqual([
        { offset: 0, length: S, state: 'data' },
        { offset: S, length: 127 * S, state: 'zero' },
        { offset: 128 * S, length: 54 * S, state: 'data' },
        { offset: 182 * S, length: (2176 - 182) * S, state: 'zero' },
        { offset: 2176 * S, length: 54 * S, state: 'data' },
        { offset: 2230 * S, length: (10240 - 2230) * S, state: 'zero' },
      ]);
      expect(await image.map(100, 1000, 1)).toEqual([{ offset: 100, length: 412, state: 'data' }]);
      expect(await image.map(130 * S, 100 * S)).toEqual([
        { offset: 130 * S, length: 52 * S, state: 'data' },
        { offset: 182 * S, length: 48 * S, state: 'zero' },
      ]);
    } finally {
      await image.close();
    }
  });
});

describe('random access', () => {
  it.each(DMG_FIXTURES.map((f) => [f.file]))('%s: any range reads as the same bytes of the whole disk', async (file) => {
    const image = await openDmg(fixturePath(file), { cacheBytes: 2 * MiB });
    try {
      const whole = await readWhole(image);
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 0, max: image.size - 1 }), fc.integer({ min: 1, max: 3 * MiB }), async (offset, length) => {
          const n = Math.min(length, image.size - offset);
          const buf = Buffer.alloc(n, 0xee);
          await image.read(buf, offset);
          expect(buf.equals(whole.subarray(offset, offset + n))).toBe(true);
        }),
        { numRuns: 40, seed: 3 },
      );
    } finally {
      await image.close();
    }
  });

  it('a 4 KiB read decodes only its chunk; reads of a cached chunk and concurrent reads decode nothing more', async () => {
    const image = await openDmg(fixturePath('gpt.dmg'));
    try {
      await image.read(Buffer.alloc(4096), 8192);
      expect(image.decodes).toBe(1);
      for (let at = 0; at < MiB; at += 4096) await image.read(Buffer.alloc(4096), at);
      expect(image.decodes).toBe(1);
      // 64 reads at once in the second chunk: one decode between them.
      await Promise.all(Array.from({ length: 64 }, (_, i) => image.read(Buffer.alloc(4096), MiB + i * 4096)));
      expect(image.decodes).toBe(2);
      // A read across the boundary of the second and third chunks decodes the third only.
      await image.read(Buffer.alloc(8192), 2 * MiB - 4096);
      expect(image.decodes).toBe(3);
    } finally {
      await image.close();
    }
  });

  it('keeps the cache within its byte bound: a chunk pushed out is decoded again', async () => {
    const small = await openDmg(fixturePath('gpt.dmg'), { cacheBytes: MiB });
    const large = await openDmg(fixturePath('gpt.dmg'), { cacheBytes: 2 * MiB });
    try {
      for (const image of [small, large]) {
        await image.read(Buffer.alloc(512), 0);
        await image.read(Buffer.alloc(512), MiB);
        await image.read(Buffer.alloc(512), 0);
      }
      expect(small.decodes).toBe(3);
      expect(large.decodes).toBe(2);
    } finally {
      await small.close();
      await large.close();
    }
  });
});

describe('the Layer contract', () => {
  it('is read-only: writes, zeroing, discards and resizing are EPERM', async () => {
    const image = await openImage(fixturePath('gpt.dmg'), { readOnly: false });
    try {
      expect([image.readOnly, image.layerUUID, image.parentUUID, image.layerType]).toEqual([true, null, null, null]);
      for (const op of [() => image.write(Buffer.alloc(512), 0), () => image.zero(0, 512), () => image.discard(0, 512), () => image.truncate(1024)]) {
        const err: unknown = await op().catch((e: unknown) => e);
        expect(err).toBeInstanceOf(RequestError);
        expect((err as RequestError).errno).toBe('EPERM');
      }
    } finally {
      await image.close();
    }
  });

  it('pins size, mtime and inode, and details the codecs, sizes, checksums and partitions', async () => {
    const image = await openImage(fixturePath('compression-zlib.dmg'), { readOnly: true });
    try {
      const st = statSync(fixturePath('compression-zlib.dmg'), { bigint: true });
      expect(await image.pin()).toEqual({ size: 5242880, mtime: st.mtimeNs.toString(), inode: Number(st.ino) });
      const details = await image.details!();
      expect(details).toMatchObject({
        udifFormat: 'UDZO',
        virtualSize: 5242880,
        compressedSize: 2973,
        fileSize: 9204,
        resourceFork: 'xml',
        chunks: { zlib: { count: 3, decodedBytes: 109 * S, storedBytes: 2973 }, ignore: { count: 4 } },
        checksums: { dataFork: 'CRC32', master: 'CRC32', blkx: ['CRC32'] },
      });
      expect((details.partitions as Array<{ name: string }>).map((p) => p.name)).toEqual([
        'Master Boot Record (MBR : 0)',
        ' (Apple_Free : 1)',
        ' (Windows_FAT_16 : 2)',
        ' (Windows_FAT_16 : 3)',
        ' (Apple_Free : 4)',
      ]);
    } finally {
      await image.close();
    }
  });

  it('is a base an ASIF overlay can be stacked on; the DMG never changes', async () => {
    const overlay = tmp('over.asif');
    const before = sha256(readFileSync(fixturePath('gpt.dmg')));
    const base = await DiskImage.open(fixturePath('gpt.dmg'), { mode: 'readWrite' });
    const stacked = await base.appending({ path: overlay, type: 'overlay' });
    try {
      expect(stacked.layers.map((l) => [l.format, l.parentUUID])).toEqual([
        ['dmg', null],
        ['asif', null],
      ]);
      const data = randomBytes(3 * MiB);
      await stacked.stack.write(data, MiB + 512);
      const back = Buffer.alloc(3 * MiB);
      await stacked.stack.read(back, MiB + 512);
      expect(back.equals(data)).toBe(true);
    } finally {
      await stacked.close();
    }
    const reopened = await DiskImage.open([fixturePath('gpt.dmg'), overlay], { mode: 'readOnly' });
    try {
      const whole = await readWhole(reopened.stack);
      const dmg = await openDmg(fixturePath('gpt.dmg'));
      const original = await readWhole(dmg);
      await dmg.close();
      expect(whole.subarray(0, MiB + 512).equals(original.subarray(0, MiB + 512))).toBe(true);
      expect(whole.subarray(4 * MiB + 512).equals(original.subarray(4 * MiB + 512))).toBe(true);
    } finally {
      await reopened.close();
    }
    expect(sha256(readFileSync(fixturePath('gpt.dmg')))).toBe(before);
  });
});

/** A disk of mixed content, split into chunks of the given types. */
function mixedDisk(): { disk: Buffer; partitions: (codec: (plain: Buffer) => Buffer, type: number) => TestPartition[] } {
  const a = Buffer.concat([randomBytes(300 * S), Buffer.alloc(200 * S, 0x5a)]);
  const b = randomBytes(64 * S);
  const disk = Buffer.concat([Buffer.alloc(S, 1), a, Buffer.alloc(100 * S), Buffer.alloc(28 * S), b]);
  return {
    disk,
    partitions: (codec, type) => [
      { name: 'MBR', chunks: [{ type: ChunkType.RAW, sectors: 1, stored: disk.subarray(0, S) }] },
      {
        name: 'data (Apple_HFS : 1)',
        chunks: [
          { type: ChunkType.COMMENT, sectors: 0 },
          { type, sectors: 500, stored: codec(a), decoded: a },
          { type: ChunkType.ZERO, sectors: 100 },
          { type: ChunkType.IGNORE, sectors: 28 },
          { type, sectors: 64, stored: codec(b), decoded: b },
          { type: ChunkType.COMMENT, sectors: 0 },
        ],
      },
    ],
  };
}

async function expectDisk(path: string, disk: Buffer): Promise<void> {
  const image = await openImage(path, { readOnly: true });
  try {
    expect(image.size).toBe(disk.length);
    expect((await readWhole(image)).equals(disk)).toBe(true);
  } finally {
    await image.close();
  }
  const report = await checkDmg(path);
  expect(report.errors).toEqual([]);
  expect(report.clean).toBe(true);
}

describe('UDIF shapes the fixtures lack', () => {
  it('xz (ULMO) chunks, comments and zero-fill entries (counted as zeros in the blkx checksum)', async () => {
    requireTool('xz');
    const { disk, partitions } = mixedDisk();
    const path = tmp('ulmo.dmg');
    writeFileSync(path, buildDmg(partitions((plain) => execFileSync('xz', ['-c'], { input: plain }), ChunkType.XZ)));
    await expectDisk(path, disk);
    const image = await openImage(path, { readOnly: true });
    expect((await image.details!()).udifFormat).toBe('ULMO');
    await image.close();
  });

  it('the binary resource fork of images older than Mac OS X 10.2', async () => {
    const { disk, partitions } = mixedDisk();
    const path = tmp('rsrc.dmg');
    writeFileSync(path, buildDmg(partitions((plain) => deflateSync(plain), ChunkType.ZLIB), { resources: 'binary' }));
    await expectDisk(path, disk);
    const image = await openImage(path, { readOnly: true });
    const details = await image.details!();
    expect(details.resourceFork).toBe('binary');
    expect((details.partitions as Array<{ name: string; id: number }>).map((p) => [p.name, p.id])).toEqual([
      ['MBR', -1],
      ['data (Apple_HFS : 1)', 0],
    ]);
    await image.close();
  });

  it('the koly at offset 0', async () => {
    const { disk, partitions } = mixedDisk();
    const path = tmp('front.dmg');
    writeFileSync(path, buildDmg(partitions((plain) => deflateSync(plain), ChunkType.ZLIB), { kolyAtStart: true }));
    await expectDisk(path, disk);
  });

  it('a stub with neither plist nor resource fork: the data fork is the disk, a short last sector padded', async () => {
    const raw = randomBytes(10 * S + 100);
    const path = tmp('stub.dmg');
    writeFileSync(path, buildDmg([], { resources: 'none', stub: raw }));
    const image = await openImage(path, { readOnly: true });
    try {
      expect(image.size).toBe(11 * S);
      expect((await readWhole(image)).equals(Buffer.concat([raw, Buffer.alloc(S - 100)]))).toBe(true);
      expect((await image.details!()).udifFormat).toBe('UDRW');
    } finally {
      await image.close();
    }
  });
});
