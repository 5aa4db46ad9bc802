/**
 * Damaged and hostile DMG files: every one gives one typed error in one line (a
 * CorruptedImageError naming what is wrong, an UnsupportedFormatError for what stackbd does not
 * read), never a crash, a hang or a huge allocation. Covers the koly, the plist, the mish
 * tables, compressed and raw chunks (found by their codec or by the checksums), truncated
 * files, encrypted images, and random damage anywhere.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { deflateSync } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CorruptedImageError, ImageError, RequestError, UnsupportedFormatError } from '../../../src/block/errors.js';
import { checkDmg, openDmg } from '../../../src/formats/dmg/index.js';
import { ChunkType } from '../../../src/formats/dmg/layout.js';
import { openImage } from '../../../src/formats/open-image.js';
import { probeFormat } from '../../../src/formats/probe.js';
import { withTimeLimit } from '../helpers/time-limit.js';
import { useTmpDir } from '../helpers/tmp-dir.js';
import { buildDmg, type BuildOptions } from './build-dmg.js';
import { DMG_FIXTURES, fixturePath, readWhole } from './dmg-fixtures.js';

const tmp = useTmpDir('dmg-corrupt');
const ZLIB_FIXTURE = readFileSync(fixturePath('compression-zlib.dmg'));
const KOLY = ZLIB_FIXTURE.length - 512;
const XML = 2973;

let counter = 0;
function save(bytes: Buffer): string {
  const path = tmp(`damaged-${counter++}.dmg`);
  writeFileSync(path, bytes);
  return path;
}

function changed(edit: (b: Buffer) => void, from: Buffer = ZLIB_FIXTURE): string {
  const b = Buffer.from(from);
  edit(b);
  return save(b);
}

/** Opens (as DMG, not probed) and reads everything; resolves with the error, or null. */
async function openAndRead(path: string): Promise<unknown> {
  try {
    const image = await openDmg(path);
    try {
      await readWhole(image);
    } finally {
      await image.close();
    }
    return null;
  } catch (err) {
    return err;
  }
}

async function expectOneLine(path: string, type: typeof ImageError, message: RegExp): Promise<void> {
  const err = await openAndRead(path);
  expect(err).toBeInstanceOf(type);
  expect((err as Error).message).toMatch(message);
  expect((err as Error).message).not.toContain('\n');
  expect((err as Error).message.startsWith(path)).toBe(true);
}

describe('the koly trailer', () => {
  it('a damaged magic: probing sees no DMG, the name refuses RAW, opened as DMG it is corrupt, check says so', async () => {
    const path = changed((b) => (b[KOLY] ^= 0x20));
    expect(await probeFormat(path)).toBe('raw');
    await expect(openImage(path)).rejects.toThrow(UnsupportedFormatError);
    await expect(openImage(path)).rejects.toThrow(/name says DMG/);
    await expectOneLine(path, CorruptedImageError, /no koly trailer/);
    const report = await checkDmg(path);
    expect(report.clean).toBe(false);
    expect(report.errors).toEqual([expect.stringMatching(/no koly trailer/)]);
  });

  it.each([
    ['version 3', (b: Buffer) => b.writeUInt32BE(3, KOLY + 4), UnsupportedFormatError, /koly version 3/],
    ['header size', (b: Buffer) => b.writeUInt32BE(500, KOLY + 8), UnsupportedFormatError, /header size 500/],
    ['two segments', (b: Buffer) => b.writeUInt32BE(2, KOLY + 60), UnsupportedFormatError, /2-segment image/],
    ['data fork past the end', (b: Buffer) => b.writeBigUInt64BE(1n << 40n, KOLY + 32), CorruptedImageError, /data fork at 0\+\d+, past the end/],
    ['a u64 beyond 2^53', (b: Buffer) => b.writeBigUInt64BE(1n << 60n, KOLY + 216), CorruptedImageError, /XML offset \d+ is out of range/],
    ['XML cut short', (b: Buffer) => b.writeBigUInt64BE(BigInt(KOLY - XML - 10), KOLY + 224), CorruptedImageError, /not well-formed XML/],
    ['sector count', (b: Buffer) => b.writeBigUInt64BE(10241n, KOLY + 492), CorruptedImageError, /koly says 10241 sectors but the blkx tables cover 10240/],
  ] as const)('%s', async (_, edit, type, message) => {
    await expectOneLine(changed(edit), type, message);
  });
});

describe('the XML plist', () => {
  const xmlText = ZLIB_FIXTURE.subarray(XML, KOLY).toString('latin1');
  const at = (text: string): number => XML + xmlText.indexOf(text);

  const cases: Array<[string, (b: Buffer) => void, RegExp]> = [
    ['no blkx key', (b) => b.write('blkY', at('blkx'), 'latin1'), /has no 'resource-fork' → 'blkx' entries/],
    ['a broken tag', (b) => b.write(' ', at('<array>'), 'latin1'), /not well-formed XML/],
    ['invalid UTF-8', (b) => (b[at('Master')] = 0xff), /not valid UTF-8/],
    ['base64 of a mish header damaged', (b) => b.write('AAAA', at('bWlza'), 'latin1'), /blkx 0 .*no mish block table/],
    ['Data missing', (b) => b.write('<key>Dat_', at('<key>Data'), 'latin1'), /blkx entry 0 has no Data/],
  ];
  it.each(cases)('%s', async (_, edit, message) => {
    await expectOneLine(changed(edit), CorruptedImageError, message);
  });
});

/** Two partitions: an MBR sector, then zlib (256 sectors), ignore (16), raw (4). */
function tableImage(options: BuildOptions = {}, declaredZlibSectors = 256): string {
  const a = Buffer.concat([randomBytes(128 * 512), Buffer.alloc(128 * 512, 0x42)]);
  return save(
    buildDmg(
      [
        { name: 'MBR', chunks: [{ type: ChunkType.RAW, sectors: 1, stored: randomBytes(512) }] },
        {
          name: 'disk (Apple_HFS : 1)',
          // A chunk declared larger than its stream: its checksum does not matter.
          crc: declaredZlibSectors === 256 ? undefined : 0,
          chunks: [
            { type: ChunkType.ZLIB, sectors: declaredZlibSectors, stored: deflateSync(a), decoded: a },
            { type: ChunkType.IGNORE, sectors: 16 },
            { type: ChunkType.RAW, sectors: 4, stored: randomBytes(2048) },
          ],
        },
      ],
      options,
    ),
  );
}

/** Edits a field of entry `i` of partition 1's mish table. */
function entry(i: number, field: 'type' | 'sector' | 'sectors' | 'offset' | 'length', value: number | bigint): BuildOptions {
  const at = 204 + 40 * i + { type: 0, sector: 8, sectors: 16, offset: 24, length: 32 }[field];
  return {
    tamper: (p, mish) => {
      if (p !== 1) return mish;
      if (field === 'type') mish.writeUInt32BE(Number(value), at);
      else mish.writeBigUInt64BE(BigInt(value), at);
      return mish;
    },
  };
}

function header(edit: (mish: Buffer) => Buffer): BuildOptions {
  return { tamper: (p, mish) => (p === 1 ? edit(mish) : mish) };
}

describe('a hostile plist', () => {
  it('deep nesting is a parse failure, not a crash', async () => {
    const depth = 20_000;
    const xml = Buffer.from(`<?xml version="1.0" encoding="UTF-8"?><plist version="1.0">${'<array>'.repeat(depth)}${'</array>'.repeat(depth)}</plist>`);
    const koly = Buffer.from(ZLIB_FIXTURE.subarray(KOLY));
    koly.writeBigUInt64BE(BigInt(xml.length), 224);
    await expectOneLine(save(Buffer.concat([ZLIB_FIXTURE.subarray(0, XML), xml, koly])), CorruptedImageError, /the XML property list does not parse \(Maximum call stack size exceeded\)/);
  });
});

describe('mish block tables', () => {
  it('an intact table image reads and checks clean (the base of the cases below)', async () => {
    const path = tableImage();
    expect(await openAndRead(path)).toBeNull();
    expect((await checkDmg(path)).clean).toBe(true);
  });

  it.each([
    ['overlapping chunks', entry(1, 'sector', 100), CorruptedImageError, /entry 1 starts at sector 100, expected 256/],
    ['out of order', entry(2, 'sector', 0), CorruptedImageError, /entry 2 starts at sector 0, expected 272/],
    ['a gap', entry(1, 'sectors', 15), CorruptedImageError, /entry 2 starts at sector 272, expected 271/],
    ['a chunk past the data fork', entry(2, 'offset', 1 << 30), CorruptedImageError, /entry 2 \(raw\) stores bytes at \d+\+2048, past the \d+-byte data fork/],
    ['sector counts that do not add up', header((m) => (m.writeBigUInt64BE(300n, 16), m)), CorruptedImageError, /the chunks cover 276 sectors but the table has 300/],
    ['an absurd sector count', entry(1, 'sectors', 1n << 60n), CorruptedImageError, /entry 1 sector count \d+ is out of range/],
    ['a huge stored length', entry(0, 'length', 1n << 40n), CorruptedImageError, /entry 0 \(zlib\) stores 1099511627776 bytes/],
    ['a raw chunk of the wrong length', entry(2, 'length', 100), CorruptedImageError, /entry 2 \(raw, 4 sectors\) stores 100 bytes, not 2048/],
    ['an unknown chunk type', entry(0, 'type', 0x80000009), UnsupportedFormatError, /entry 0 has chunk type 0x80000009/],
    ['no terminator', entry(3, 'type', ChunkType.COMMENT), CorruptedImageError, /no terminator/],
    ['a data chunk of no sectors', entry(2, 'sectors', 0), CorruptedImageError, /entry 2 \(raw\) covers no sectors/],
    ['a wrong entry count', header((m) => (m.writeUInt32BE(9, 200), m)), CorruptedImageError, /table is \d+ bytes but 9 entries need/],
    ['a damaged magic', header((m) => (m.write('MISH', 0, 'latin1'), m)), CorruptedImageError, /blkx 1 "disk \(Apple_HFS : 1\)": no mish block table/],
    ['version 2', header((m) => (m.writeUInt32BE(2, 4), m)), UnsupportedFormatError, /mish version 2/],
    ['partitions with a gap', header((m) => (m.writeBigUInt64BE(2n, 8), m)), CorruptedImageError, /blkx 1 "disk \(Apple_HFS : 1\)" starts at sector 2, expected 1/],
  ] as const)('%s', async (_, options, type, message) => {
    await expectOneLine(tableImage(options), type, message);
  });

  it('the same problems in the binary resource fork', async () => {
    await expectOneLine(tableImage({ ...entry(1, 'sector', 100), resources: 'binary' }), CorruptedImageError, /entry 1 starts at sector 100/);
  });
});

describe('chunks', () => {
  it('a damaged zlib chunk: reading it names the chunk; check names it and the data fork checksum', async () => {
    const path = changed((b) => (b[200] ^= 0xff));
    const image = await openDmg(path);
    try {
      // The MBR chunk (sector 0) is damaged; the FAT partitions are not.
      await image.read(Buffer.alloc(4096), 128 * 512);
      const err: unknown = await image.read(Buffer.alloc(512), 0).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CorruptedImageError);
      expect((err as Error).message).toMatch(/blkx 0 "Master Boot Record \(MBR : 0\)" entry 0 \(zlib, sectors 0-0\): zlib: /);
      expect((err as Error).message).not.toContain('\n');
    } finally {
      await image.close();
    }
    const report = await checkDmg(path);
    expect(report.clean).toBe(false);
    expect(report.errors).toEqual([expect.stringMatching(/^data fork: CRC32 is/), expect.stringMatching(/entry 0 \(zlib, sectors 0-0\): zlib: /)]);
  });

  it('a compressed chunk larger than stackbd decodes is refused at open, before any allocation', async () => {
    await expectOneLine(tableImage({}, 1 << 20), UnsupportedFormatError, /entry 0 is a zlib chunk of 1048576 sectors; stackbd decodes chunks of at most 131072/);
  });

  it('a chunk that decodes to fewer bytes than it declares', async () => {
    await expectOneLine(tableImage({}, 300), CorruptedImageError, /blkx 1 "disk \(Apple_HFS : 1\)" entry 0 \(zlib, sectors 1-300\): decodes to 131072 bytes, not 153600/);
  });

  it('a damaged raw chunk reads, and check finds it by the blkx and data fork checksums', async () => {
    const raw = readFileSync(fixturePath('compression-raw.dmg'));
    const path = changed((b) => (b[40000] ^= 0x01), raw);
    expect(await openAndRead(path)).toBeNull();
    const report = await checkDmg(path);
    expect(report.errors).toEqual([expect.stringMatching(/^data fork: CRC32 is [0-9A-F]{8} but [0-9A-F]{8} is recorded$/), expect.stringMatching(/^blkx 3 " \(Windows_FAT_16 : 3\)": CRC32 is/)]);
  });

  it('a changed blkx checksum, and a changed master checksum', async () => {
    const report = await checkDmg(tableImage(header((m) => (m.writeUInt32BE(0x12345678, 72), m))));
    expect(report.errors).toEqual([expect.stringMatching(/^blkx 1 .*CRC32 is [0-9A-F]{8} but 12345678 is recorded/)]);
    const master = await checkDmg(changed((b) => b.writeUInt32BE(0x12345678, KOLY + 360)));
    expect(master.errors).toEqual(['master checksum: CRC32 is 2B76E491 but 12345678 is recorded']);
  });
});

describe('truncated and encrypted files', () => {
  it.each([0, 100, 511, 3000, ZLIB_FIXTURE.length - 512, ZLIB_FIXTURE.length - 1])('cut to %i bytes', async (length) => {
    await expectOneLine(save(ZLIB_FIXTURE.subarray(0, length)), CorruptedImageError, /too small|no koly trailer/);
  });

  it('bytes cut from the middle: the koly points past the end', async () => {
    await expectOneLine(save(Buffer.concat([ZLIB_FIXTURE.subarray(0, 1000), ZLIB_FIXTURE.subarray(5000)])), CorruptedImageError, /past the end of the \d+-byte file/);
  });

  it.each([
    ['encrcdsa at the start (version 2)', Buffer.concat([Buffer.from('encrcdsa'), randomBytes(70_000)]), /encrypted disk image \(encrcdsa, version 2\)/],
    ['cdsaencr at the end (version 1)', Buffer.concat([randomBytes(70_000), Buffer.from('cdsaencr')]), /encrypted disk image \(cdsaencr, version 1\)/],
  ])('%s is refused by name', async (_, bytes, message) => {
    const path = save(bytes);
    expect(await probeFormat(path)).toBe('dmg');
    const err: unknown = await openImage(path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsupportedFormatError);
    expect((err as Error).message).toMatch(message);
    await expect(checkDmg(path)).rejects.toThrow(UnsupportedFormatError);
  });
});

describe('random damage', () => {
  it.each(DMG_FIXTURES.map((f) => [f.file]))('%s: flipped bytes anywhere give a typed one-line error or a readable image, in bounded time', async (file) => {
    const original = readFileSync(fixturePath(file));
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.integer({ min: 0, max: original.length - 1 }), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }), async (flips) => {
        const path = changed((b) => flips.forEach(([at, mask]) => (b[at] ^= mask)), original);
        const err = await withTimeLimit(openAndRead(path), 20_000, `reading ${path}`);
        if (err !== null) {
          expect(err instanceof ImageError || err instanceof RequestError, String(err)).toBe(true);
          expect((err as Error).message).not.toContain('\n');
        }
        const report = await withTimeLimit(
          checkDmg(path).catch((e: unknown) => e),
          20_000,
          `checking ${path}`,
        );
        if (report instanceof Error) expect(report).toBeInstanceOf(UnsupportedFormatError);
      }),
      { numRuns: 80, seed: 99 },
    );
  });
});
