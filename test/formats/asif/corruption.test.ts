/**
 * Broken files: every field rule of spec §2, §4–§6, truncated files, pointers past the end or
 * repeated, and random bit flips in every metadata structure. Opening (and then reading and
 * mapping everything) must end in CorruptedImageError or UnsupportedFormatError, or succeed;
 * never another exception, never a hang. checkAsif never throws and reports what open refused.
 */
import fc from 'fast-check';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { CorruptedImageError, UnsupportedFormatError } from '../../../src/block/errors.js';
import { checkAsifFile, createAsifFile, openAsifFile } from '../../../src/formats/asif/index.js';
import { HEADER_FIELDS } from '../../../src/formats/asif/header.js';
import { ChunkStatus } from '../../../src/formats/asif/layout.js';
import { loadMap, mappedChunk, type LoadedMap } from '../../../src/formats/asif/load.js';
import { throwingSink } from '../../../src/formats/asif/problems.js';
import { addressOf } from '../../../src/formats/asif/table.js';
import { patternBytes } from '../helpers/disk-model.js';
import { MemFile } from '../helpers/mem-file.js';
import { withTimeLimit } from '../helpers/time-limit.js';

/** STACKBD_SOAK=N runs N times as many cases. */
const soak = Math.max(1, Number(process.env.STACKBD_SOAK ?? 1));
const C = 32 * 1024;
const TABLE_SPAN = 2048 * C;
const SIZE = 2 * TABLE_SPAN;

let base: Buffer;
let map: LoadedMap;
/** Logical chunks of the base image by state. */
const FULL = 0;
const PARTIAL = 3;
const PARTIAL_FAR = 2048 + 7;

beforeAll(async () => {
  const file = new MemFile('base.asif');
  await createAsifFile(file, { blockCount: SIZE / 512, chunkSize: C, maxSectorCount: 2 ** 20, layerType: 'overlay' });
  const image = await openAsifFile(file);
  await image.write(patternBytes(2 * C, 1), FULL * C);
  await image.write(patternBytes(4096, 2), PARTIAL * C + 8192);
  await image.write(patternBytes(1024, 3), PARTIAL_FAR * C + 512);
  await image.close();
  base = file.bytes();
  map = (await loadMap(new MemFile('base.asif', base, true), throwingSink('base'))) as LoadedMap;
});

type Outcome = 'ok' | 'corrupt' | 'unsupported';

/** Opens, then reads and maps the whole device; classifies the result; anything else fails. */
async function attempt(bytes: Buffer): Promise<{ outcome: Outcome; message: string }> {
  const work = async (): Promise<{ outcome: Outcome; message: string }> => {
    try {
      const image = await openAsifFile(new MemFile('broken.asif', bytes, true));
      try {
        const step = 8 * 1024 * 1024;
        const buf = Buffer.alloc(step);
        for (let off = 0; off < image.size; off += step) {
          const n = Math.min(step, image.size - off);
          await image.read(buf.subarray(0, n), off);
          await image.map(off, n);
        }
      } finally {
        await image.close();
      }
      return { outcome: 'ok', message: '' };
    } catch (err) {
      if (err instanceof CorruptedImageError) return { outcome: 'corrupt', message: err.message };
      if (err instanceof UnsupportedFormatError) return { outcome: 'unsupported', message: err.message };
      throw err;
    }
  };
  return withTimeLimit(work(), 5000, 'open and read a broken image');
}

async function checkErrors(bytes: Buffer): Promise<string[]> {
  const report = await withTimeLimit(checkAsifFile(new MemFile('broken.asif', bytes, true)), 5000, 'check a broken image');
  return [...report.errors, ...report.doubleReferenced.map((c) => `double ${c}`)];
}

function patched(edit: (b: Buffer) => void): Buffer {
  const b = Buffer.from(base);
  edit(b);
  return b;
}

const activeDirectory = (): number => map.header.directoryOffsets[map.active];
const tablePosition = (t: number): number => map.tableChunks[t] * C;
const entryPosition = (logical: number): number => {
  const a = addressOf(map.geometry, logical);
  return tablePosition(a.table) + a.entryOffset;
};
const bitmapEntryPosition = (logical: number): number => {
  const a = addressOf(map.geometry, logical);
  return tablePosition(a.table) + a.bitmapEntryOffset;
};

it('the base image is what the cases below expect', async () => {
  expect(mappedChunk(map, FULL).status).toBe(ChunkStatus.full);
  expect(mappedChunk(map, PARTIAL).status).toBe(ChunkStatus.partial);
  expect(mappedChunk(map, PARTIAL_FAR).status).toBe(ChunkStatus.partial);
  expect([...map.tables.keys()].sort((a, b) => a - b)).toEqual([0, 1, 7]);
  expect((await attempt(base)).outcome).toBe('ok');
  expect(await checkErrors(base)).toEqual([]);
});

const u32 = (at: number, v: number) => (b: Buffer) => b.writeUInt32BE(v, at);
const u16 = (at: number, v: number) => (b: Buffer) => b.writeUInt16BE(v, at);
const u64 = (at: () => number, v: bigint) => (b: Buffer) => b.writeBigUInt64BE(v, at());

const CASES: Array<{ name: string; edit: (b: Buffer) => void; expected: Outcome; message: RegExp }> = [
  { name: 'magic', edit: u32(0, 0x51464900), expected: 'unsupported', message: /not an ASIF image/ },
  { name: 'version 2', edit: u32(HEADER_FIELDS.version, 2), expected: 'unsupported', message: /version 2/ },
  { name: 'header size too small', edit: u32(HEADER_FIELDS.headerSize, 0x10), expected: 'corrupt', message: /header size/ },
  { name: 'header size above the chunk size', edit: u32(HEADER_FIELDS.headerSize, C + 1), expected: 'corrupt', message: /header size/ },
  { name: 'chunk size zero', edit: u32(HEADER_FIELDS.chunkSize, 0), expected: 'corrupt', message: /chunk size/ },
  { name: 'chunk size not a multiple of the block size', edit: u32(HEADER_FIELDS.chunkSize, C + 100), expected: 'corrupt', message: /chunk size/ },
  { name: 'block size zero', edit: u16(HEADER_FIELDS.blockSize, 0), expected: 'corrupt', message: /block size/ },
  { name: 'block size not a multiple of 512', edit: u16(HEADER_FIELDS.blockSize, 1000), expected: 'corrupt', message: /block size/ },
  { name: 'segments', edit: u16(HEADER_FIELDS.segmentCount, 1), expected: 'unsupported', message: /segment/ },
  { name: 'sector count above the capacity', edit: u64(() => HEADER_FIELDS.sectorCount, 2n ** 21n), expected: 'corrupt', message: /exceeds the capacity/ },
  { name: 'capacity zero', edit: u64(() => HEADER_FIELDS.maxSectorCount, 0n), expected: 'corrupt', message: /capacity/ },
  { name: 'capacity beyond 2^53 bytes', edit: u64(() => HEADER_FIELDS.maxSectorCount, 2n ** 60n), expected: 'unsupported', message: /capacity/ },
  { name: 'metadata chunk beyond the capacity', edit: u64(() => HEADER_FIELDS.metadataChunk, 2n ** 40n), expected: 'corrupt', message: /metadata chunk/ },
  { name: 'metadata chunk inside the device', edit: u64(() => HEADER_FIELDS.metadataChunk, 5n), expected: 'corrupt', message: /overlaps the metadata chunk/ },
  { name: 'directory A inside the header', edit: u64(() => HEADER_FIELDS.directoryA, 0x10n), expected: 'corrupt', message: /inside the header/ },
  { name: 'directory B past the end', edit: u64(() => HEADER_FIELDS.directoryB, 2n ** 40n), expected: 'corrupt', message: /past the end of the file/ },
  { name: 'directories overlapping', edit: (b) => b.writeBigUInt64BE(b.readBigUInt64BE(HEADER_FIELDS.directoryA) + 8n, HEADER_FIELDS.directoryB), expected: 'corrupt', message: /overlap/ },
  { name: 'equal sequences', edit: (b) => b.writeBigUInt64BE(map.sequences[map.active], map.header.directoryOffsets[1 - map.active]), expected: 'corrupt', message: /both have sequence/ },
  { name: 'table pointer past the end', edit: u64(() => activeDirectory() + 8, 10_000n), expected: 'corrupt', message: /past the end of the file/ },
  { name: 'two tables in one chunk', edit: (b) => b.writeBigUInt64BE(BigInt(map.tableChunks[0]), activeDirectory() + 8 + 8), expected: 'corrupt', message: /referenced more than once/ },
  { name: 'table pointing at a data chunk', edit: (b) => b.writeBigUInt64BE(BigInt(mappedChunk(map, FULL).chunk), activeDirectory() + 8 + 8 * 3), expected: 'corrupt', message: /referenced more than once/ },
  { name: 'reserved bits of an entry', edit: (b) => (b[entryPosition(FULL)] |= 0x01), expected: 'corrupt', message: /reserved bits/ },
  { name: 'status 00 with a chunk', edit: (b) => b.writeBigUInt64BE(5n, entryPosition(10)), expected: 'corrupt', message: /status 00 carries chunk/ },
  { name: 'status 10 with a chunk', edit: (b) => b.writeBigUInt64BE((2n << 62n) | 5n, entryPosition(10)), expected: 'corrupt', message: /status 10 carries chunk/ },
  { name: 'status 01 without a chunk', edit: (b) => b.writeBigUInt64BE(1n << 62n, entryPosition(10)), expected: 'corrupt', message: /carries no chunk/ },
  { name: 'data pointer past the end', edit: (b) => b.writeBigUInt64BE((1n << 62n) | 99_999n, entryPosition(FULL)), expected: 'corrupt', message: /past the end of the file/ },
  { name: 'data pointer into the header', edit: (b) => b.writeBigUInt64BE((1n << 62n) | 0n, entryPosition(FULL)) , expected: 'corrupt', message: /carries no chunk/ },
  { name: 'two entries with one chunk', edit: (b) => b.writeBigUInt64BE((1n << 62n) | BigInt(mappedChunk(map, FULL).chunk), entryPosition(20)), expected: 'corrupt', message: /referenced more than once/ },
  { name: 'partly written chunk without a bitmap chunk', edit: (b) => b.writeBigUInt64BE(0n, bitmapEntryPosition(PARTIAL)), expected: 'corrupt', message: /no bitmap chunk/ },
  { name: 'bitmap pointer past the end', edit: (b) => b.writeBigUInt64BE(50_000n, bitmapEntryPosition(PARTIAL)), expected: 'corrupt', message: /past the end/ },
  { name: 'bitmap chunk shared with data', edit: (b) => b.writeBigUInt64BE(BigInt(mappedChunk(map, FULL).chunk), bitmapEntryPosition(PARTIAL_FAR)), expected: 'corrupt', message: /referenced more than once/ },
  { name: 'metadata magic', edit: (b) => b.write('xxxx', mappedChunk(map, map.header.metadataChunk).chunk * C, 'latin1'), expected: 'corrupt', message: /'meta' header/ },
  { name: 'metadata chunk unmapped', edit: (b) => b.writeBigUInt64BE(0n, entryPosition(map.header.metadataChunk)), expected: 'corrupt', message: /metadata chunk.*not allocated/ },
  { name: 'bitmap state 11', edit: (b) => (b[(mappedChunk(map, PARTIAL).slicePosition as number) + 4] = 0xff), expected: 'corrupt', message: /invalid state 11/ },
];

describe('each broken field gives its typed error, and check reports it', () => {
  it.each(CASES)('$name', async ({ edit, expected, message }) => {
    const bytes = patched(edit);
    const result = await attempt(bytes);
    expect(result.outcome).toBe(expected);
    expect(result.message).toMatch(message);
    expect(result.message.startsWith('broken.asif: ')).toBe(true);
    const errors = await checkErrors(bytes);
    expect(errors.length).toBeGreaterThan(0);
    if (expected === 'corrupt') expect(errors.join('\n')).toMatch(message);
  });
});

describe('truncated files', () => {
  it('fail with a typed error or open, at every interesting length', async () => {
    const lengths = [0, 4, 100, 511, 512, 600, C - 1, C, 2 * C, 3 * C + 5, base.length - C, base.length - 1];
    for (const n of lengths) {
      const bytes = base.subarray(0, n);
      const { outcome } = await attempt(Buffer.from(bytes));
      if (n < base.length - C) expect(outcome, `${n} bytes`).not.toBe('ok');
      const errors = await checkErrors(Buffer.from(bytes));
      if (outcome !== 'ok') expect(errors.length, `${n} bytes`).toBeGreaterThan(0);
    }
  });
});

describe('random bit flips in the metadata', () => {
  it('never crash, hang or pass silently where check sees a problem', async () => {
    const regions: Array<[number, number]> = [
      [0, 512],
      [map.header.directoryOffsets[0], map.header.directoryOffsets[0] + map.geometry.directoryBytes],
      [map.header.directoryOffsets[1], map.header.directoryOffsets[1] + map.geometry.directoryBytes],
      ...[...map.tables.keys()].map((t): [number, number] => [tablePosition(t), tablePosition(t) + 2 * map.geometry.groupBytes]),
      [bitmapEntryPosition(PARTIAL) - 64, bitmapEntryPosition(PARTIAL) + 64],
      [mappedChunk(map, PARTIAL).slicePosition as number, (mappedChunk(map, PARTIAL).slicePosition as number) + 16],
      [mappedChunk(map, map.header.metadataChunk).chunk * C, mappedChunk(map, map.header.metadataChunk).chunk * C + 0x400],
    ];
    // Nothing may print (the XML parser inside the plist package would, if it got broken text).
    const printed = (['error', 'warn', 'log'] as const).map((m) => vi.spyOn(console, m).mockImplementation(() => undefined));
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.record({ region: fc.nat({ max: regions.length - 1 }), at: fc.nat(), bit: fc.nat({ max: 7 }) }), { minLength: 1, maxLength: 3 }),
          async (flips) => {
            const bytes = patched((b) => {
              for (const f of flips) {
                const [start, end] = regions[f.region];
                b[start + (f.at % (end - start))] ^= 1 << f.bit;
              }
            });
            const { outcome } = await attempt(bytes);
            const errors = await checkErrors(bytes);
            if (outcome === 'corrupt') expect(errors.length).toBeGreaterThan(0);
          },
        ),
        { numRuns: 300 * soak },
      );
      for (const p of printed) expect(p.mock.calls).toEqual([]);
    } finally {
      printed.forEach((p) => p.mockRestore());
    }
  });
});
