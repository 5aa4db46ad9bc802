/**
 * The cache fill stores zeros as zeros (issue 11): a base that maps everything as data (an http
 * object) no longer fills its cache with written zeros. Whole chunks read as zeros become zero
 * chunks of the cache (a map change), whether read in one request or piece by piece; an all-zero
 * piece of a chunk that holds data is written with it; what is held back is stored by a flush.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAsif } from '../../src/formats/asif/index.js';
import type { AsifImage } from '../../src/formats/asif/index.js';
import { openImage } from '../../src/formats/open-image.js';
import { HeldZeros, type ByteSpan } from '../../src/stack/held-zeros.js';
import { Stack } from '../../src/stack/stack.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { allDataBase, sparseContent, type AllDataBase } from './helpers/all-data-base.js';

const MiB = 1024 * 1024;
const KiB = 1024;
let dir: string;
let n = 0;

beforeAll(async () => {
  dir = await makeTempDir('stackbd-cache-fill-');
});
afterAll(() => removeDir(dir));

/** base (all data) + a new ASIF cache + a new ASIF overlay. */
async function makeStack(content: Buffer): Promise<{ stack: Stack; base: AllDataBase; cache: AsifImage; cachePath: string }> {
  const id = n++;
  const cachePath = path.join(dir, `cache-${id}.asif`);
  const overlayPath = path.join(dir, `overlay-${id}.asif`);
  const blockCount = content.length / 512;
  await createAsif(cachePath, { blockCount, layerType: 'cache', parentUUID: null });
  await createAsif(overlayPath, { blockCount, layerType: 'overlay', parentUUID: null });
  const base = allDataBase(content);
  const cache = (await openImage(cachePath, { readOnly: false })) as AsifImage;
  const overlay = await openImage(overlayPath, { readOnly: false });
  return { stack: new Stack([base, cache, overlay]), base, cache, cachePath };
}

/** Reads [start, end) in `piece`-byte requests, `depth` at once, and checks every byte. */
async function readAll(stack: Stack, content: Buffer, start: number, end: number, piece: number, depth = 16): Promise<void> {
  const offsets: number[] = [];
  for (let at = start; at < end; at += piece) offsets.push(at);
  const next = async (): Promise<void> => {
    for (let at = offsets.shift(); at !== undefined; at = offsets.shift()) {
      const buf = Buffer.alloc(Math.min(piece, end - at));
      await stack.read(buf, at);
      expect(buf.equals(content.subarray(at, at + buf.length)), `bytes at ${at}`).toBe(true);
    }
  };
  await Promise.all(Array.from({ length: depth }, next));
}

/** The cache's own map, one state per MiB chunk ('mixed' when a chunk has several). */
async function chunkStates(cache: AsifImage, chunks: number): Promise<string[]> {
  const out: string[] = [];
  for (let c = 0; c < chunks; c++) {
    const runs = await cache.map(c * MiB, MiB);
    out.push(runs.length === 1 ? runs[0].state : 'mixed');
  }
  return out;
}

describe('cache fills store zeros as zeros', () => {
  it('a whole read in 256 KiB requests leaves zero chunks where the base is zero, data chunks elsewhere', async () => {
    const content = sparseContent(16, new Set([0, 3, 4, 9]));
    // Chunk 12: a little data in its first piece, zeros in the other three.
    content.fill(0x5a, 12 * MiB + 1000, 12 * MiB + 5000);
    const { stack, base, cache, cachePath } = await makeStack(content);
    await readAll(stack, content, 0, content.length, 256 * KiB);
    expect(base.bytesRead).toBe(content.length);
    await stack.flush();
    const want = Array.from({ length: 16 }, (_, c) => ([0, 3, 4, 9, 12].includes(c) ? 'data' : 'zero'));
    expect(await chunkStates(cache, 16)).toEqual(want);
    expect(cache.allocatedBytes()).toBe(5 * MiB);
    expect(stack.cacheStats.storedDataBytes).toBe(4 * MiB + 256 * KiB);
    expect(stack.cacheStats.storedZeroBytes).toBe(11 * MiB + 768 * KiB);
    // Everything comes from the cache now, and the zero chunks show as zeros of the cache (depth 2).
    await readAll(stack, content, 0, content.length, 256 * KiB);
    expect(base.bytesRead).toBe(content.length);
    const extents = await stack.extents(0, content.length);
    expect(extents.filter((e) => e.state === 'zero').reduce((s, e) => s + e.length, 0)).toBe(11 * MiB);
    expect(extents.every((e) => e.depth === 2)).toBe(true);
    await stack.close();
    // Durable: the map of the reopened cache says the same.
    const reopened = (await openImage(cachePath, { readOnly: true })) as AsifImage;
    expect(await chunkStates(reopened, 16)).toEqual(want);
    await reopened.close();
  });

  it('a zero chunk read in one request becomes a zero chunk at once', async () => {
    const content = sparseContent(4, new Set([0]));
    const { stack, base, cache } = await makeStack(content);
    await readAll(stack, content, 2 * MiB, 3 * MiB, MiB, 1);
    await stack.flush();
    expect(await chunkStates(cache, 4)).toEqual(['absent', 'absent', 'zero', 'absent']);
    expect(cache.allocatedBytes()).toBe(0);
    expect(base.bytesRead).toBe(MiB);
    await stack.close();
  });

  it('holds an all-zero piece back until its chunk is known, and a flush stores it', async () => {
    const content = sparseContent(4, new Set([0]));
    const { stack, base, cache } = await makeStack(content);
    await readAll(stack, content, MiB + 256 * KiB, MiB + 512 * KiB, 256 * KiB, 1);
    // Not stored yet (the rest of the chunk may come), but the stack knows it has to be.
    await new Promise((resolve) => setImmediate(resolve));
    expect(await cache.map(MiB + 256 * KiB, 256 * KiB)).toEqual([{ offset: MiB + 256 * KiB, length: 256 * KiB, state: 'absent' }]);
    expect(stack.cacheDirty).toBe(true);
    await stack.flush();
    expect(stack.cacheDirty).toBe(false);
    // Stored as written zeros (a piece of a chunk cannot be a zero chunk): read again from the cache.
    expect(await cache.map(MiB + 256 * KiB, 256 * KiB)).toEqual([{ offset: MiB + 256 * KiB, length: 256 * KiB, state: 'data' }]);
    const before = base.bytesRead;
    await readAll(stack, content, MiB + 256 * KiB, MiB + 512 * KiB, 256 * KiB, 1);
    expect(base.bytesRead).toBe(before);
    expect(stack.cacheStats.storedZeroBytes).toBe(256 * KiB);
    await stack.close();
  });

  it('writes the all-zero pieces of a chunk that holds data together with it, whichever comes first', async () => {
    const content = sparseContent(4, new Set());
    content.fill(7, 3 * MiB + 600 * KiB, 3 * MiB + 700 * KiB);
    const { stack, cache } = await makeStack(content);
    // Zero pieces first (held), then the data piece (releases them), then the last zero piece.
    await readAll(stack, content, 3 * MiB, 3 * MiB + 512 * KiB, 256 * KiB, 1);
    await readAll(stack, content, 3 * MiB + 512 * KiB, 3 * MiB + 768 * KiB, 256 * KiB, 1);
    await readAll(stack, content, 3 * MiB + 768 * KiB, 4 * MiB, 256 * KiB, 1);
    await stack.flush();
    expect(await chunkStates(cache, 4)).toEqual(['absent', 'absent', 'absent', 'data']);
    expect(stack.cacheStats.storedDataBytes).toBe(256 * KiB);
    expect(stack.cacheStats.storedZeroBytes).toBe(768 * KiB);
    await stack.close();
  });
});

describe('HeldZeros', () => {
  const unit = MiB;

  it('completes a chunk from overlapping pieces in any order, the last chunk of a disk included', () => {
    const held = new HeldZeros(unit, 2 * MiB + 512 * KiB);
    const released: ByteSpan[] = [];
    expect(held.zeroPiece(512 * KiB, MiB, released)).toEqual({ action: 'held' });
    expect(held.zeroPiece(0, 300 * KiB, released)).toEqual({ action: 'held' });
    expect(held.holding).toBe(true);
    expect(held.zeroPiece(200 * KiB, 600 * KiB, released)).toEqual({ action: 'chunk', start: 0, end: MiB });
    expect(held.holding).toBe(false);
    expect(held.zeroPiece(2 * MiB, 2 * MiB + 512 * KiB, released)).toEqual({ action: 'chunk', start: 2 * MiB, end: 2 * MiB + 512 * KiB });
    expect(released).toEqual([]);
  });

  it('releases the held pieces of a chunk found to hold data, and stores its later zero pieces at once', () => {
    const held = new HeldZeros(unit, 4 * MiB);
    const released: ByteSpan[] = [];
    held.zeroPiece(MiB, MiB + 4096, released);
    held.zeroPiece(MiB + 8192, MiB + 12288, released);
    held.dataPiece(1, released);
    expect(released).toEqual([
      [MiB, MiB + 4096],
      [MiB + 8192, MiB + 12288],
    ]);
    expect(held.zeroPiece(MiB + 65536, MiB + 131072, released)).toEqual({ action: 'store' });
  });

  it('remembers at most maxChunks chunks, handing back the pieces of the one it forgets', () => {
    const held = new HeldZeros(unit, 8 * MiB, 2);
    const released: ByteSpan[] = [];
    held.zeroPiece(0, 4096, released);
    held.zeroPiece(MiB, MiB + 4096, released);
    expect(released).toEqual([]);
    held.zeroPiece(2 * MiB, 2 * MiB + 4096, released);
    expect(released).toEqual([[0, 4096]]);
    expect(held.takeAll()).toEqual([
      [MiB, MiB + 4096],
      [2 * MiB, 2 * MiB + 4096],
    ]);
    expect(held.holding).toBe(false);
  });
});
