/**
 * The DMG writer: pieces at any byte offsets come back exactly (holes as zeros, the disk
 * padded to whole sectors); chunks are at most 1 MiB, zlib only where it shrinks the data, and
 * holes store nothing; a 1 GiB sparse disk with a few MiB of data becomes a small DMG and
 * converts back to an equal RAW that is still sparse.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { openFdFile } from '../../../src/io/fd-file.js';
import { checkDmg, DmgWriter, openDmg } from '../../../src/formats/dmg/index.js';
import { loadStructure } from '../../../src/formats/dmg/load.js';
import { convertStack } from '../../../src/stack/convert.js';
import { DiskImage } from '../../../src/stack/disk-image.js';
import { useTmpDir } from '../helpers/tmp-dir.js';
import { readWhole } from './dmg-fixtures.js';

const tmp = useTmpDir('dmg-write');
const MiB = 1024 * 1024;

async function chunkKinds(path: string): Promise<Array<[string, number]>> {
  const file = await openFdFile(path, { readOnly: true });
  try {
    const s = await loadStructure(file);
    return s.partitions.flatMap((p) => p.table.chunks.map((c) => [c.kind, c.sectors] as [string, number]));
  } finally {
    await file.close();
  }
}

describe('DmgWriter', () => {
  it('pieces at any byte offsets read back exactly, with zeros between them and a padded last sector', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 * MiB }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 3 * MiB }), fc.integer({ min: 1, max: 1.5 * MiB })), { maxLength: 8 }),
        fc.constantFrom('zlib' as const, 'raw' as const),
        async (size, rawPieces, compression) => {
          const model = Buffer.alloc(Math.ceil(size / 512) * 512);
          const path = tmp('prop.dmg');
          const writer = await DmgWriter.create(path, { size, compression, overwrite: true });
          // Sorted, clipped to the disk, not overlapping.
          let frontier = 0;
          for (const [offset, length] of [...rawPieces].sort((a, b) => a[0] - b[0])) {
            const at = Math.max(offset, frontier);
            const n = Math.min(length, size - at);
            if (n <= 0) continue;
            const data = randomBytes(n);
            if (n > 4096) data.fill(0x61, 0, n >> 1);
            await writer.write(data, at);
            data.copy(model, at);
            frontier = at + n;
          }
          await writer.finish();
          const image = await openDmg(path);
          try {
            expect(image.size).toBe(model.length);
            expect((await readWhole(image)).equals(model)).toBe(true);
          } finally {
            await image.close();
          }
          expect((await checkDmg(path)).errors).toEqual([]);
        },
      ),
      { numRuns: 25, seed: 5 },
    );
  });

  it('cuts data into chunks of at most 2048 sectors, stores incompressible chunks raw and holes as ignore chunks', async () => {
    const path = tmp('kinds.dmg');
    const writer = await DmgWriter.create(path, { size: 8 * MiB });
    await writer.write(Buffer.alloc(MiB + 4096, 0x61), 0);
    await writer.write(randomBytes(MiB), 4 * MiB);
    await writer.finish();
    expect(await chunkKinds(path)).toEqual([
      ['zlib', 2048],
      ['zlib', 8],
      ['ignore', 4 * 2048 - 2056],
      ['raw', 2048],
      ['ignore', 3 * 2048],
    ]);
  });

  it('refuses pieces that go back or run past the disk', async () => {
    const writer = await DmgWriter.create(tmp('order.dmg'), { size: MiB, overwrite: true });
    await writer.write(Buffer.alloc(1000, 1), 5000);
    await expect(writer.write(Buffer.alloc(10, 1), 5999)).rejects.toThrow(RangeError);
    await expect(writer.write(Buffer.alloc(10, 1), MiB - 5)).rejects.toThrow(RangeError);
    await writer.write(Buffer.alloc(10, 1), 6000);
    await writer.abort();
  });

  it('refuses to replace a file unless told to', async () => {
    const path = tmp('exists.dmg');
    fs.writeFileSync(path, 'x');
    await expect(DmgWriter.create(path, { size: MiB })).rejects.toMatchObject({ code: 'EEXIST' });
    const writer = await DmgWriter.create(path, { size: MiB, overwrite: true });
    await writer.finish();
    expect((await checkDmg(path)).clean).toBe(true);
  });
});

describe('a 1 GiB sparse disk', () => {
  it('converts to a small DMG and back to an equal RAW that stays sparse', async () => {
    const GiB = 1024 * MiB;
    const source = tmp('sparse.raw');
    const fd = fs.openSync(source, 'w');
    fs.ftruncateSync(fd, GiB);
    const pieces = Array.from({ length: 12 }, (_, i) => ({ at: i * 83 * MiB + i * 4096 * 3, data: i % 3 === 0 ? Buffer.alloc(256 * 1024, i + 1) : randomBytes(384 * 1024) }));
    for (const p of pieces) fs.writeSync(fd, p.data, 0, p.data.length, p.at);
    fs.closeSync(fd);
    const dmg = tmp('sparse.dmg');
    const back = tmp('back.raw');
    const src = await DiskImage.open(source, { mode: 'readOnly' });
    await convertStack(src.stack, dmg, { format: 'dmg' }).finally(() => src.close());
    // The random pieces stay as they are; the constant ones shrink to almost nothing.
    const randomPart = pieces.reduce((n, p, i) => n + (i % 3 === 0 ? 0 : p.data.length), 0);
    expect(fs.statSync(dmg).size).toBeLessThan(randomPart + 64 * 1024);
    const mid = await DiskImage.open(dmg, { mode: 'readOnly' });
    await convertStack(mid.stack, back, { format: 'raw' }).finally(() => mid.close());

    expect(fs.statSync(back).size).toBe(GiB);
    // Allocated bytes: the data, give or take file-system blocks; never the 1 GiB.
    expect(fs.statSync(back).blocks * 512).toBeLessThanOrEqual(fs.statSync(source).blocks * 512 + 1 * MiB);
    const a = fs.openSync(source, 'r');
    const b = fs.openSync(back, 'r');
    try {
      const x = Buffer.alloc(16 * MiB);
      const y = Buffer.alloc(16 * MiB);
      for (let at = 0; at < GiB; at += x.length) {
        fs.readSync(a, x, 0, x.length, at);
        fs.readSync(b, y, 0, y.length, at);
        if (!x.equals(y)) expect.fail(`the RAW made from the DMG differs in [${at}, ${at + x.length})`);
      }
    } finally {
      fs.closeSync(a);
      fs.closeSync(b);
    }
  });
});
