/** Behaviour of an open ASIF image, one rule at a time (issue 3, spec §7, §10, §11). */
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { InvalidBlockCountError, RequestError } from '../../../src/block/errors.js';
import {
  asifCapacity,
  checkAsif,
  checkAsifFile,
  createAsif,
  createAsifFile,
  openAsif,
  openAsifFile,
  type AsifImage,
} from '../../../src/formats/asif/index.js';
import { loadMap } from '../../../src/formats/asif/load.js';
import { throwingSink } from '../../../src/formats/asif/problems.js';
import type { LayerType } from '../../../src/formats/layer.js';
import { patternBytes } from '../helpers/disk-model.js';
import { MemFile, seededRandom } from '../helpers/mem-file.js';
import { RecordingFile } from '../helpers/recording-file.js';
import { useTmpDir } from '../helpers/tmp-dir.js';
import { PaddedImage } from '../helpers/padded.js';

const tmp = useTmpDir('image');
const KiB = 1024;
const MiB = 1024 * KiB;
const C = 32 * KiB;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const PARENT = '0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0';

class CountingFile extends MemFile {
  reads = 0;
  override read(buf: Uint8Array, position: number): Promise<void> {
    this.reads++;
    return super.read(buf, position);
  }
}

/** A small test image (32 KiB chunks) in memory. */
async function memImage(options: { layerType?: LayerType | null; chunks?: number; blockSize?: 512 | 4096; random?: () => number; cache?: number } = {}): Promise<{ file: MemFile; image: AsifImage }> {
  const blockSize = options.blockSize ?? 512;
  const chunkSize = blockSize === 512 ? C : 256 * KiB;
  const file = new CountingFile('test.asif', new Uint8Array(0), false, options.random ?? null);
  await createAsifFile(file, {
    blockCount: ((options.chunks ?? 64) * chunkSize) / blockSize,
    blockSize,
    chunkSize,
    maxSectorCount: 2 ** 22,
    layerType: options.layerType ?? null,
    parentUUID: options.layerType ? PARENT : null,
  });
  const image = await openAsifFile(file, { bitmapCacheBytes: options.cache, dirtyBitmapBytes: options.cache });
  return { file, image };
}

async function readBack(image: AsifImage, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length, 0xee);
  await image.read(buf, offset);
  return buf;
}

describe('create', () => {
  it('makes standalone, overlay and cache images with the layer fields of spec §10', async () => {
    for (const layerType of [null, 'overlay', 'cache'] as const) {
      const path = tmp(`create-${layerType}.asif`);
      await createAsif(path, { blockCount: 2048, layerType, parentUUID: layerType ? PARENT : null });
      const image = await openAsif(path, { readOnly: true });
      expect(image.layerType).toBe(layerType);
      expect(image.parentUUID).toBe(layerType ? PARENT : null);
      expect(image.layerUUID).toMatch(UUID);
      expect(image.stableUUID).toMatch(UUID);
      expect(image.size).toBe(MiB);
      await image.close();
      expect((await checkAsif(path)).clean).toBe(true);
    }
  });

  it('makes 4096-byte-block images with 1 MiB chunks, 2^40 sectors of capacity and metadata chunk 0xFFFFFFFF', async () => {
    const path = tmp('4k.asif');
    await createAsif(path, { blockCount: 1000, blockSize: 4096 });
    const image = await openAsif(path, { readOnly: true });
    expect([image.blockSize, image.chunkSize, image.blockCount]).toEqual([4096, MiB, 1000]);
    await image.close();
    const { openFdFile } = await import('../../../src/io/fd-file.js');
    const file = await openFdFile(path, { readOnly: true });
    const map = await loadMap(file, throwingSink(path));
    await file.close();
    expect(map?.geometry.maxSectorCount).toBe(2 ** 40);
    expect(map?.header.metadataChunk).toBe(0xffffffff);
    expect(asifCapacity(4096)).toBe(0xffffffff * 256);
    expect(asifCapacity(512)).toBe(0xffffffff * 2048);
    expect(statSync(path).size).toBe(4 * MiB);
  });

  it.each([0, -5, 1.5, Number.NaN, asifCapacity(512) + 1])('refuses block count %s with InvalidBlockCountError', async (blockCount) => {
    const path = tmp(`bad-${String(blockCount)}.asif`);
    await expect(createAsif(path, { blockCount })).rejects.toBeInstanceOf(InvalidBlockCountError);
    expect(existsSync(path)).toBe(false);
  });

  it('accepts the largest block count', async () => {
    const path = tmp('huge.asif');
    await createAsif(path, { blockCount: asifCapacity(512) });
    const image = await openAsif(path);
    expect(image.size).toBe(asifCapacity(512) * 512);
    const data = patternBytes(4096, 1);
    await image.write(data, image.size - 4096);
    expect((await readBack(image, image.size - 4096, 4096)).equals(data)).toBe(true);
    await image.close();
    expect((await checkAsif(path)).errors).toEqual([]);
  });

  it('refuses to replace a file unless asked, and refuses bad arguments', async () => {
    const path = tmp('exists.asif');
    writeFileSync(path, 'precious');
    await expect(createAsif(path, { blockCount: 10 })).rejects.toMatchObject({ code: 'EEXIST' });
    expect(readFileSync(path, 'utf8')).toBe('precious');
    await createAsif(path, { blockCount: 10, overwrite: true });
    expect((await checkAsif(path)).clean).toBe(true);
    await expect(createAsif(tmp('x.asif'), { blockCount: 10, parentUUID: 'nope' })).rejects.toBeInstanceOf(RequestError);
    await expect(createAsif(tmp('y.asif'), { blockCount: 10, blockSize: 1024 as 512 })).rejects.toBeInstanceOf(RequestError);
  });
});

describe('layer UUID rotation', () => {
  it('gives a non-cache image a new UUID, durable before the first change reaches the disk, once per open', async () => {
    for (const change of ['write', 'zero', 'discard'] as const) {
      const file = new MemFile('rot.asif');
      await createAsifFile(file, { blockCount: 4096, chunkSize: C, maxSectorCount: 2 ** 22, layerType: 'overlay', parentUUID: PARENT });
      const rec = new RecordingFile(file);
      const image = await openAsifFile(rec);
      const before = image.layerUUID;
      await image.read(Buffer.alloc(512), 0);
      await image.flush();
      expect(image.layerUUID).toBe(before);
      const start = rec.log.length;
      if (change === 'write') await image.write(patternBytes(C, 1), 0);
      if (change === 'zero') await image.zero(0, C);
      if (change === 'discard') await image.discard(0, C);
      const after = image.layerUUID;
      expect(after).not.toBe(before);
      expect(after).toMatch(UUID);
      const [header, sync] = rec.log.slice(start);
      expect(header).toMatchObject({ kind: 'write', position: 0 });
      expect(sync.kind).toBe('sync');
      await image.write(patternBytes(512, 2), C);
      expect(image.layerUUID).toBe(after);
      await image.close();
      const reopened = await openAsifFile(file.copy({ readOnly: true }));
      expect(reopened.layerUUID).toBe(after);
      expect(reopened.parentUUID).toBe(PARENT);
    }
  });

  it('never rotates a cache layer', async () => {
    const { image } = await memImage({ layerType: 'cache' });
    const before = image.layerUUID;
    await image.write(patternBytes(4096, 1), 0);
    await image.zero(C, C);
    expect(image.layerUUID).toBe(before);
  });

  it('never writes anything to an image opened read-only', async () => {
    const file = new MemFile('ro.asif');
    await createAsifFile(file, { blockCount: 4096, chunkSize: C, maxSectorCount: 2 ** 22 });
    const writable = await openAsifFile(file);
    await writable.write(patternBytes(3 * C, 1), 100 * 512);
    await writable.close();
    const rec = new RecordingFile(file.copy({ readOnly: true }));
    const image = await openAsifFile(rec);
    await readBack(image, 0, image.size);
    await image.map(0, image.size);
    await image.flush();
    await expect(image.write(Buffer.alloc(512), 0)).rejects.toMatchObject({ errno: 'EPERM' });
    await expect(image.zero(0, 512)).rejects.toMatchObject({ errno: 'EPERM' });
    await expect(image.discard(0, C)).rejects.toMatchObject({ errno: 'EPERM' });
    await expect(image.truncate(C)).rejects.toMatchObject({ errno: 'EPERM' });
    await image.close();
    expect(rec.log).toEqual([]);
  });
});

describe('map states', () => {
  it('in a layer: 00 absent, 10 zero, written sectors data, unwritten sectors of an 11 chunk absent', async () => {
    const { image } = await memImage({ layerType: 'overlay' });
    await image.write(patternBytes(1024, 1), 2 * C + 4096);
    await image.zero(4 * C, C);
    await image.write(patternBytes(C, 2), 6 * C);
    await image.discard(6 * C, C);
    await image.discard(8 * C, C);
    expect(await image.map(0, 10 * C)).toEqual([
      { offset: 0, length: 2 * C + 4096, state: 'absent' },
      { offset: 2 * C + 4096, length: 1024, state: 'data' },
      { offset: 2 * C + 5120, length: 2 * C - 5120, state: 'absent' },
      { offset: 4 * C, length: C, state: 'zero' },
      { offset: 5 * C, length: C, state: 'absent' },
      { offset: 6 * C, length: C, state: 'zero' },
      { offset: 7 * C, length: 3 * C, state: 'absent' },
    ]);
  });

  it('standalone: zeroing or discarding what was never written changes nothing', async () => {
    const { image } = await memImage();
    await image.zero(0, 4 * C);
    await image.zero(5 * C + 512, 1024);
    await image.discard(0, 8 * C);
    expect(await image.map(0, 8 * C)).toEqual([{ offset: 0, length: 8 * C, state: 'absent' }]);
    expect(image.allocatedBytes()).toBe(0);
  });

  it('a partial write to a zeroed chunk of a layer keeps the rest zero (it never falls through)', async () => {
    const { image } = await memImage({ layerType: 'overlay' });
    await image.zero(0, C);
    const data = patternBytes(700, 3);
    await new PaddedImage(image).write(data, 1000);
    expect(await image.map(0, C)).toEqual([{ offset: 0, length: C, state: 'data' }]);
    const back = await readBack(image, 0, C);
    expect(back.subarray(1000, 1700).equals(data)).toBe(true);
    expect(back.subarray(0, 1000).every((b) => b === 0) && back.subarray(1700).every((b) => b === 0)).toBe(true);
  });

  it('fileMap gives file offsets and merges physically contiguous chunks; a read of them is one file read', async () => {
    const { image, file } = await memImage();
    await image.write(patternBytes(3 * C, 4), 10 * C);
    const runs = await image.fileMap(10 * C, 3 * C);
    expect(runs).toHaveLength(1);
    expect(runs[0]).toMatchObject({ offset: 10 * C, length: 3 * C, state: 'data' });
    expect(runs[0].fileOffset).toBeGreaterThan(0);
    const counting = file as CountingFile;
    const before = counting.reads;
    const back = await readBack(image, 10 * C + 100, 3 * C - 200);
    expect(counting.reads - before).toBe(1);
    expect(back.equals(patternBytes(3 * C, 4).subarray(100, 3 * C - 100))).toBe(true);
  });

  it('takes writes and zeroes of whole sectors only: the stack pads the others', async () => {
    const { image } = await memImage({ layerType: 'overlay' });
    await expect(image.write(Buffer.from([1, 2, 3]), 1000)).rejects.toMatchObject({ errno: 'EINVAL' });
    await expect(image.write(Buffer.alloc(512), 100)).rejects.toMatchObject({ errno: 'EINVAL' });
    await expect(image.zero(512, 100)).rejects.toMatchObject({ errno: 'EINVAL' });
    expect(image.requestAlignment).toBe(512);
    expect(image.allocatedBytes()).toBe(0);
  });

  it('an unaligned write, padded, fills its sectors as if nothing lay below', async () => {
    const { image } = await memImage({ layerType: 'overlay' });
    await new PaddedImage(image).write(Buffer.from([1, 2, 3]), 1000);
    const back = await readBack(image, 512, 1024);
    expect([...back.subarray(488, 491)]).toEqual([1, 2, 3]);
    expect(back.subarray(0, 488).every((b) => b === 0)).toBe(true);
    expect(await image.map(0, 2048)).toEqual([
      { offset: 0, length: 512, state: 'absent' },
      { offset: 512, length: 512, state: 'data' },
      { offset: 1024, length: 1024, state: 'absent' },
    ]);
  });

  it('refuses requests after close', async () => {
    const { image } = await memImage();
    await image.close();
    await image.close();
    await expect(image.read(Buffer.alloc(512), 0)).rejects.toMatchObject({ errno: 'ESHUTDOWN' });
    await expect(image.write(Buffer.alloc(512), 0)).rejects.toMatchObject({ errno: 'ESHUTDOWN' });
  });

  it('refuses ranges outside the image', async () => {
    const { image } = await memImage();
    await expect(image.read(Buffer.alloc(512), image.size - 256)).rejects.toMatchObject({ errno: 'EINVAL' });
    await expect(image.write(Buffer.alloc(1), -1)).rejects.toMatchObject({ errno: 'EINVAL' });
    await expect(image.map(0, image.size + 1)).rejects.toMatchObject({ errno: 'EINVAL' });
  });
});

describe('zero', () => {
  it('FAST_ZERO fails at once, changing nothing, when data would have to be written', async () => {
    const { image, file } = await memImage({ layerType: 'overlay' });
    await image.write(patternBytes(2 * C, 1), 0);
    await image.flush();
    const uuid = image.layerUUID;
    const bytes = file.bytes();
    for (const [offset, length, noHole] of [
      [512, 1024, false],
      [0, C, true],
      [5 * C + 512, 512, false],
    ] as const) {
      await expect(image.zero(offset, length, { fast: true, noHole })).rejects.toMatchObject({ errno: 'ENOTSUP' });
    }
    await image.flush();
    expect(file.bytes().equals(bytes)).toBe(true);
    expect(image.layerUUID).toBe(uuid);
    await image.zero(0, 3 * C, { fast: true });
    expect(await image.map(0, 3 * C)).toEqual([{ offset: 0, length: 3 * C, state: 'zero' }]);
    expect(image.allocatedBytes()).toBe(0);
  });

  it('NO_HOLE keeps allocated chunks allocated, holding zeros', async () => {
    const { image } = await memImage();
    await image.write(patternBytes(2 * C, 1), 0);
    await image.write(patternBytes(512, 2), 3 * C);
    await image.zero(0, 4 * C, { noHole: true });
    expect(image.allocatedBytes()).toBe(3 * C);
    const runs = await image.fileMap(0, 4 * C);
    expect(runs.filter((r) => r.state === 'data').reduce((n, r) => n + r.length, 0)).toBe(3 * C);
    expect((await readBack(image, 0, 4 * C)).every((b) => b === 0)).toBe(true);
    await image.zero(0, 4 * C);
    expect(image.allocatedBytes()).toBe(0);
  });
});

describe('truncate', () => {
  it.each([null, 'overlay'] as const)('shrinking then growing reads zeros past the old end (layer type %s)', async (layerType) => {
    const { image, file } = await memImage({ layerType });
    await image.write(patternBytes(6 * C, 1), 0);
    const cut = 2 * C + 1536;
    await image.truncate(cut);
    expect(image.size).toBe(cut);
    expect(image.allocatedBytes()).toBe(3 * C);
    await image.truncate(64 * C);
    const back = await readBack(image, 0, 6 * C);
    expect(back.subarray(0, cut).equals(patternBytes(6 * C, 1).subarray(0, cut))).toBe(true);
    expect(back.subarray(cut).every((b) => b === 0)).toBe(true);
    if (layerType) expect((await image.map(cut, 6 * C - cut)).every((r) => r.state !== 'absent')).toBe(true);
    await image.close();
    const reopened = await openAsifFile(file.copy({ readOnly: true }));
    expect(reopened.size).toBe(64 * C);
    expect((await checkAsifFile(file.copy({ readOnly: true }))).errors).toEqual([]);
  });

  it('refuses sizes that are not whole blocks within the capacity, and cache layers', async () => {
    const { image } = await memImage();
    for (const size of [0, -512, 1000, 2 ** 22 * 512])
      await expect(image.truncate(size)).rejects.toBeInstanceOf(InvalidBlockCountError);
    const cache = await memImage({ layerType: 'cache' });
    await expect(cache.image.truncate(C)).rejects.toMatchObject({ errno: 'EPERM' });
  });
});

describe('chunk reuse', () => {
  it('reuses a chunk freed by a committed discard, never one freed since the last flush', async () => {
    const { image, file } = await memImage();
    await image.write(patternBytes(2 * C, 1), 0);
    await image.flush();
    const size = await file.size();
    await image.discard(0, C);
    await image.write(patternBytes(C, 2), 10 * C);
    expect(await file.size()).toBe(size + C);
    await image.flush();
    await image.write(patternBytes(C, 3), 20 * C);
    expect(await file.size()).toBe(size + C);
    expect((await readBack(image, 10 * C, C)).equals(patternBytes(C, 2))).toBe(true);
    expect((await readBack(image, 20 * C, C)).equals(patternBytes(C, 3))).toBe(true);
  });

  it('never hands a freed chunk to a new owner while a request that looked it up is still running', async () => {
    class GatedFile extends MemFile {
      gate: { from: number; to: number; open: Promise<void> } | null = null;
      override async read(buf: Uint8Array, position: number): Promise<void> {
        const g = this.gate;
        if (g && position >= g.from && position < g.to) await g.open;
        return super.read(buf, position);
      }
    }
    const file = new GatedFile('gated.asif');
    await createAsifFile(file, { blockCount: 64 * 64, chunkSize: C, maxSectorCount: 2 ** 22 });
    const image = await openAsifFile(file);
    const old = patternBytes(C, 1);
    await image.write(old, 0);
    await image.flush();
    const [{ fileOffset }] = await image.fileMap(0, C);
    let open!: () => void;
    file.gate = { from: fileOffset as number, to: (fileOffset as number) + C, open: new Promise<void>((r) => (open = r)) };
    const stalled = readBack(image, 0, C);
    await new Promise((r) => setImmediate(r));
    await image.discard(0, C);
    await image.flush();
    const size = await file.size();
    await image.write(patternBytes(C, 2), 5 * C);
    expect(await file.size()).toBe(size + C);
    open();
    const seen = await stalled;
    expect(seen.equals(old) || seen.every((b) => b === 0)).toBe(true);
    // Once that read is over, the chunk is reused.
    await image.write(patternBytes(C, 3), 6 * C);
    expect(await file.size()).toBe(size + C);
    expect((await image.fileMap(6 * C, C))[0].fileOffset).toBe(fileOffset);
  });

  it('check reports freed chunks as leaked after close; the next open reuses them', async () => {
    const { image, file } = await memImage();
    await image.write(patternBytes(4 * C, 1), 0);
    await image.discard(C, C);
    await image.discard(3 * C, C);
    await image.close();
    expect(image.freeChunks()).toHaveLength(2);
    const report = await checkAsifFile(file.copy({ readOnly: true }));
    expect(report.errors).toEqual([]);
    expect(report.leakedChunks).toEqual(image.freeChunks());
    expect(report.clean).toBe(false);
    const size = await file.size();
    const again = await openAsifFile(file);
    await again.write(patternBytes(2 * C, 2), 30 * C);
    await again.close();
    expect(await file.size()).toBe(size);
    expect((await checkAsifFile(file.copy({ readOnly: true }))).clean).toBe(true);
  });

  it('close gives back free chunks at the end of the file', async () => {
    const { image, file } = await memImage();
    await image.write(patternBytes(2 * C, 1), 0);
    await image.flush();
    const size = await file.size();
    await image.write(patternBytes(3 * C, 2), 10 * C);
    await image.flush();
    await image.discard(10 * C, 3 * C);
    await image.close();
    expect(await file.size()).toBe(size);
    expect((await checkAsifFile(file.copy({ readOnly: true }))).clean).toBe(true);
  });
});

describe('concurrency', () => {
  it('concurrent writes to one unallocated chunk share one new chunk', async () => {
    for (const layerType of [null, 'overlay'] as const) {
      const { image, file } = await memImage({ layerType, random: seededRandom(5) });
      const pieces = Array.from({ length: 16 }, (_, i) => ({ off: 5 * C + i * 2048 + (i % 3) * 100, data: patternBytes(1500, i) }));
      const io = new PaddedImage(image);
      await Promise.all(pieces.map((p) => io.write(p.data, p.off)));
      expect(image.allocatedBytes()).toBe(C);
      const chunks = new Set((await image.fileMap(5 * C, C)).filter((r) => r.fileOffset !== null).map((r) => Math.floor((r.fileOffset as number) / C)));
      expect(chunks.size).toBe(1);
      for (const p of pieces) expect((await readBack(image, p.off, 1500)).equals(p.data)).toBe(true);
      await image.close();
      expect((await checkAsifFile(file.copy({ readOnly: true }))).clean).toBe(true);
    }
  });

  it('bitmap cache misses racing each other and writes stay correct with a one-slice cache', async () => {
    const { image, file } = await memImage({ cache: 1, random: seededRandom(9) });
    const chunks = 48;
    await Promise.all(Array.from({ length: chunks }, (_, i) => image.write(patternBytes(1024, i), i * C + 4096)));
    await image.flush();
    const reads = Array.from({ length: 200 }, (_, n) => n % chunks);
    const results = await Promise.all(reads.map((i) => readBack(image, i * C + 4096, 1024)));
    results.forEach((r, n) => expect(r.equals(patternBytes(1024, reads[n]))).toBe(true));
    await Promise.all(Array.from({ length: chunks }, (_, i) => image.write(patternBytes(512, 100 + i), i * C + 8192)));
    const stats = image.bitmapCacheStats();
    expect(stats.capacity).toBe(1);
    expect(stats.clean).toBeLessThanOrEqual(1);
    await image.close();
    const reopened = await openAsifFile(file.copy({ readOnly: true }), { bitmapCacheBytes: 1 });
    for (let i = 0; i < chunks; i++) {
      expect((await readBack(reopened, i * C + 4096, 1024)).equals(patternBytes(1024, i))).toBe(true);
      expect((await readBack(reopened, i * C + 8192, 512)).equals(patternBytes(512, 100 + i))).toBe(true);
    }
  });

  it('slices in memory stay bounded: writers wait for a flush when too many changed ones pile up', async () => {
    const { image } = await memImage({ cache: 200 * 16, chunks: 4096, random: seededRandom(8) });
    const { dirtyLimit, capacity } = image.bitmapCacheStats();
    const batch = 50;
    for (let i = 0; i < 3000; i += batch) {
      const chunks = Array.from({ length: batch }, (_, j) => i + j);
      const previous = i - batch;
      // New partial chunks, two writes each; while their writers wait for flushes: a third sector in half of
      // the previous batch's chunks (copy on write of slices a flush is writing), a discard of
      // the other half (slices dropped while cached or lent), reads of older chunks (misses).
      await Promise.all([
        ...chunks.map((c) => image.write(patternBytes(512, c), c * C)),
        ...chunks.map((c) => image.write(patternBytes(512, c + 3), c * C + 4096)),
        ...(previous >= 0 ? chunks.slice(0, batch / 2).map((c) => image.write(patternBytes(512, c + 7), (c - batch) * C + 8192)) : []),
        previous >= 0 ? image.discard((previous + batch / 2) * C, (batch / 2) * C) : Promise.resolve(),
        ...chunks.map((c) => readBack(image, (c % (i + batch)) * C, 512)),
      ]);
      const stats = image.bitmapCacheStats();
      expect(stats.pinned).toBeLessThanOrEqual(dirtyLimit + 3 * batch);
      expect(stats.clean).toBeLessThanOrEqual(capacity);
    }
    // Clean ones, pinned ones, and the originals of those copied while a flush wrote them.
    expect(image.bitmapCacheStats().slots).toBeLessThanOrEqual(capacity + 2 * (dirtyLimit + 3 * batch));
  });

  it('writes racing flushes lose nothing, and concurrent flushes coalesce', async () => {
    const file = new MemFile('race.asif', new Uint8Array(0), false, seededRandom(3));
    await createAsifFile(file, { blockCount: 64 * 64, chunkSize: C, maxSectorCount: 2 ** 22 });
    const rec = new RecordingFile(file);
    const image = await openAsifFile(rec);
    const io = new PaddedImage(image);
    const jobs: Array<Promise<void>> = [];
    for (let i = 0; i < 40; i++) {
      jobs.push(io.write(patternBytes(700, i), i * 1536 + (i % 5) * C));
      if (i % 7 === 0) jobs.push(image.flush());
    }
    await Promise.all(jobs);
    const syncsBefore = rec.log.filter((e) => e.kind === 'sync').length;
    await image.write(patternBytes(512, 99), 40 * C);
    await Promise.all(Array.from({ length: 10 }, () => image.flush()));
    const rounds = rec.log.filter((e) => e.kind === 'sync').length - syncsBefore;
    expect(rounds).toBeLessThanOrEqual(2 * 4);
    await image.close();
    const reopened = await openAsifFile(file.copy({ readOnly: true }));
    for (let i = 0; i < 40; i++) {
      expect((await readBack(reopened, i * 1536 + (i % 5) * C, 700)).equals(patternBytes(700, i))).toBe(true);
    }
  });
});

describe('flush failures', () => {
  class FlakyFile extends MemFile {
    /** Fails the nth sync or write from now (1 = the next one). */
    failSync = 0;
    failWrite = 0;
    override async sync(): Promise<void> {
      if (this.failSync > 0 && --this.failSync === 0) throw Object.assign(new Error('EIO: sync'), { code: 'EIO' });
      return super.sync();
    }
    override async write(buf: Uint8Array, position: number): Promise<void> {
      if (this.failWrite > 0 && --this.failWrite === 0) throw Object.assign(new Error('EIO: write'), { code: 'EIO' });
      return super.write(buf, position);
    }
  }

  const fails = (work: Promise<unknown>): Promise<boolean> =>
    work.then(
      () => false,
      () => true,
    );

  async function dirtyImage(): Promise<{ file: FlakyFile; image: AsifImage; writes: Array<[number, Buffer]> }> {
    const file = new FlakyFile('flaky.asif');
    await createAsifFile(file, { blockCount: 64 * 64, chunkSize: C, maxSectorCount: 2 ** 22, layerType: 'overlay', parentUUID: PARENT });
    const image = await openAsifFile(file);
    const writes: Array<[number, Buffer]> = [
      [1000, patternBytes(1000, 1)],
      [3 * C, patternBytes(C, 2)],
      [20 * C + 4096, patternBytes(4096, 3)],
    ];
    for (const [at, data] of writes) await new PaddedImage(image).write(data, at);
    return { file, image, writes };
  }

  it('a failed sync poisons the image: later changes and flushes fail with EIO; reopening finds a clean map', async () => {
    let failures = 0;
    for (let n = 1; n <= 8; n++) {
      const { file, image, writes } = await dirtyImage();
      file.failSync = n;
      const failed = await fails(image.flush());
      if (!failed) continue;
      failures++;
      await expect(image.write(Buffer.alloc(512), 0)).rejects.toMatchObject({ errno: 'EIO' });
      await expect(image.flush()).rejects.toMatchObject({ errno: 'EIO' });
      await expect(image.close()).rejects.toMatchObject({ errno: 'EIO' });
      const reopened = await openAsifFile(file.copy({ readOnly: true }));
      for (const [at, data] of writes) {
        const back = await readBack(reopened, at, data.length);
        for (let s = 0; s < data.length; s += 512) {
          const piece = back.subarray(s, s + 512);
          expect(piece.equals(data.subarray(s, s + 512)) || piece.every((b) => b === 0)).toBe(true);
        }
      }
      expect((await checkAsifFile(file.copy({ readOnly: true }))).errors).toEqual([]);
    }
    // Data, bitmaps, tables, the directory body and its flip each end with a sync.
    expect(failures).toBeGreaterThanOrEqual(5);
  });

  it('a failed write leaves the changes dirty; the next flush writes them', async () => {
    let failures = 0;
    for (let n = 1; n <= 8; n++) {
      const { file, image, writes } = await dirtyImage();
      file.failWrite = n;
      const failed = await fails(image.flush());
      if (failed) failures++;
      await image.flush();
      await image.close();
      const reopened = await openAsifFile(file.copy({ readOnly: true }));
      for (const [at, data] of writes) expect((await readBack(reopened, at, data.length)).equals(data)).toBe(true);
      expect((await checkAsifFile(file.copy({ readOnly: true }))).errors).toEqual([]);
    }
    // Slices, the new table, the directory body and its flip.
    expect(failures).toBeGreaterThanOrEqual(4);
  });
});
