import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BufferPool } from '../../src/io/buffer-pool.js';
import { openFdFile } from '../../src/io/fd-file.js';
import { loadNative } from '../../src/io/native.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

describe('FdFile', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await makeTempDir();
  });
  afterAll(() => removeDir(dir));

  it('loads the native fast paths on Linux (built by npm install), and can be turned off', () => {
    const native = loadNative({});
    expect(native, 'the native addon did not load: run `node native/build.mjs` (needs python3, make, g++)').not.toBeNull();
    expect(loadNative({ STACKBD_NO_NATIVE: '1' })).toBeNull();
  });

  for (const fastPaths of [true, false]) {
    it(`reads and writes the same bytes with fast paths ${fastPaths ? 'on' : 'off'}`, async () => {
      const file = path.join(dir, `f-${fastPaths}`);
      const content = randomBytes(3 * 1024 * 1024);
      await fs.writeFile(file, content);
      const f = await openFdFile(file, { fastPaths });
      try {
        // Cached reads (the file was just written), a large one past the inline limit, and past EOF.
        for (const [offset, length] of [
          [0, 4096],
          [12345, 70000],
          [0, 2 * 1024 * 1024 + 17],
          [3 * 1024 * 1024 - 100, 300],
        ]) {
          const buf = Buffer.alloc(length, 0xee);
          await f.read(buf, offset);
          const expected = Buffer.alloc(length);
          content.copy(expected, 0, offset, offset + length);
          expect(buf.equals(expected), `read ${offset}+${length}`).toBe(true);
        }
        const patch = randomBytes(5000);
        await f.write(patch, 1000);
        const big = randomBytes(1536 * 1024);
        await f.write(big, 1024 * 1024);
        await f.write(Buffer.from('tail'), 4 * 1024 * 1024);
        await f.sync();
        patch.copy(content, 1000);
        big.copy(content, 1024 * 1024);
        const onDisk = await fs.readFile(file);
        expect(onDisk.subarray(0, content.length).equals(content)).toBe(true);
        expect(onDisk.subarray(4 * 1024 * 1024).toString()).toBe('tail');
        expect(await f.size()).toBe(4 * 1024 * 1024 + 4);
      } finally {
        await f.close();
      }
    });
  }

  it('reports write errors of inline writes as rejected promises', async () => {
    const file = path.join(dir, 'ro');
    await fs.writeFile(file, Buffer.alloc(10));
    const f = await openFdFile(file, { readOnly: true });
    await expect(f.write(Buffer.alloc(10), 0)).rejects.toThrow(/EBADF/);
    await f.close();
  });
});

describe('BufferPool', () => {
  it('reuses a large buffer once it is given back, and leaves small ones to Node', () => {
    const pool = new BufferPool({ baseBytes: 4 * 1024 * 1024, maxBytes: 4 * 1024 * 1024 });
    const a = pool.take(1024 * 1024 + 28);
    expect(a.length).toBe(1024 * 1024 + 28);
    pool.give(a);
    expect(pool.idleBytes).toBe(2 * 1024 * 1024);
    const b = pool.take(1500 * 1024);
    expect(b.buffer).toBe(a.buffer);
    expect(pool.idleBytes).toBe(0);
    const small = pool.take(2048);
    pool.give(small);
    expect(pool.idleBytes).toBe(0);
    pool.give(Buffer.alloc(1024 * 1024));
    expect(pool.idleBytes).toBe(0);
    pool.give(b);
    expect(() => pool.give(b)).toThrow(/twice/);
  });

  it('keeps no more than its budget', () => {
    const pool = new BufferPool({ baseBytes: 2 * 1024 * 1024, maxBytes: 2 * 1024 * 1024 });
    const bufs = [pool.take(1024 * 1024), pool.take(1024 * 1024), pool.take(1024 * 1024)];
    for (const b of bufs) pool.give(b);
    expect(pool.idleBytes).toBe(2 * 1024 * 1024);
  });

  it('keeps as much as was recently in use at once, up to its maximum, and lets it go when quiet', async () => {
    const MiB = 1024 * 1024;
    const pool = new BufferPool({ baseBytes: 2 * MiB, maxBytes: 8 * MiB, quietMs: 100 });
    const round = (n: number): void => {
      const bufs = Array.from({ length: n }, () => pool.take(MiB));
      for (const b of bufs) pool.give(b);
    };
    round(6);
    expect(pool.idleBytes).toBe(6 * MiB);
    // The next burst of the same size finds all of its buffers.
    const again = Array.from({ length: 6 }, () => pool.take(MiB));
    expect(pool.idleBytes).toBe(0);
    for (const b of again) pool.give(b);
    round(12);
    expect(pool.idleBytes).toBe(8 * MiB);
    // No take for longer than quietMs: back to the base.
    const deadline = Date.now() + 5000;
    while (pool.idleBytes > 2 * MiB && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(pool.idleBytes).toBe(2 * MiB);
  });
});

describe('FdFile holes, hole punching and locks', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await makeTempDir();
  });
  afterAll(() => removeDir(dir));

  it('reports holes, punches and zeroes ranges, and reads holes as zeros without the pool', async () => {
    const file = path.join(dir, 'sparse');
    const handle = await fs.open(file, 'w');
    await handle.truncate(8 * 1024 * 1024);
    await handle.write(Buffer.alloc(1024 * 1024, 5), 0, 1024 * 1024, 2 * 1024 * 1024);
    await handle.close();
    const f = await openFdFile(file);
    try {
      expect(f.holes!(0, 8 * 1024 * 1024)).toEqual([
        { offset: 0, length: 2 * 1024 * 1024, hole: true },
        { offset: 2 * 1024 * 1024, length: 1024 * 1024, hole: false },
        { offset: 3 * 1024 * 1024, length: 5 * 1024 * 1024, hole: true },
      ]);
      // Asked for at most one or two extents, the answer stops early and covers a prefix.
      expect(f.holes!(0, 8 * 1024 * 1024, 1)).toEqual([{ offset: 0, length: 2 * 1024 * 1024, hole: true }]);
      expect(f.holes!(2 * 1024 * 1024, 6 * 1024 * 1024, 1)).toEqual([{ offset: 2 * 1024 * 1024, length: 1024 * 1024, hole: false }]);
      expect(f.holes!(0, 8 * 1024 * 1024, 2)).toEqual([
        { offset: 0, length: 2 * 1024 * 1024, hole: true },
        { offset: 2 * 1024 * 1024, length: 1024 * 1024, hole: false },
      ]);
      const buf = Buffer.alloc(4096, 0xff);
      await f.read(buf, 4096);
      expect(buf.every((b) => b === 0)).toBe(true);
      expect(await f.punchHole!(2 * 1024 * 1024, 512 * 1024)).toBe(true);
      expect(f.holes!(2 * 1024 * 1024, 1024 * 1024)![0]).toEqual({ offset: 2 * 1024 * 1024, length: 512 * 1024, hole: true });
      expect(await f.zeroRange!(2 * 1024 * 1024 + 512 * 1024, 4096)).toBe(true);
      const after = Buffer.alloc(1024 * 1024);
      await f.read(after, 2 * 1024 * 1024);
      expect(after.subarray(0, 512 * 1024 + 4096).every((b) => b === 0)).toBe(true);
      expect(after.subarray(512 * 1024 + 4096).every((b) => b === 5)).toBe(true);
    } finally {
      await f.close();
    }
  });

  it('answers holes of a fully allocated file without looking, until a hole is punched', async () => {
    const file = path.join(dir, 'full');
    await fs.writeFile(file, Buffer.alloc(4 * 1024 * 1024, 9));
    const f = await openFdFile(file);
    try {
      expect(f.holes!(0, 4 * 1024 * 1024)).toEqual([{ offset: 0, length: 4 * 1024 * 1024, hole: false }]);
      expect(await f.punchHole!(1024 * 1024, 1024 * 1024)).toBe(true);
      expect(f.holes!(0, 4 * 1024 * 1024)).toEqual([
        { offset: 0, length: 1024 * 1024, hole: false },
        { offset: 1024 * 1024, length: 1024 * 1024, hole: true },
        { offset: 2 * 1024 * 1024, length: 2 * 1024 * 1024, hole: false },
      ]);
      const buf = Buffer.alloc(4096, 0xff);
      await f.read(buf, 1024 * 1024 + 8192);
      expect(buf.every((b) => b === 0)).toBe(true);
    } finally {
      await f.close();
    }
  });

  it('lets one writer at a time open a file, and readers whenever', async () => {
    const file = path.join(dir, 'locked');
    await fs.writeFile(file, Buffer.alloc(4096));
    const writer = await openFdFile(file);
    await expect(openFdFile(file)).rejects.toThrow(/is in use/);
    const reader = await openFdFile(file, { readOnly: true });
    await reader.close();
    await writer.close();
    const reader2 = await openFdFile(file, { readOnly: true });
    // A reader keeps writers out (a base under running VMs must not change).
    await expect(openFdFile(file)).rejects.toThrow(/is in use/);
    await reader2.close();
    const again = await openFdFile(file);
    await again.close();
  });
});
