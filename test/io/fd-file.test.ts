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
    expect(native, 'stackbd-native did not load: run npm install (needs python3, make, g++)').not.toBeNull();
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
    const pool = new BufferPool(4 * 1024 * 1024);
    const a = pool.take(1024 * 1024 + 28);
    expect(a.length).toBe(1024 * 1024 + 28);
    pool.give(a);
    expect(pool.idleBytes).toBe(2 * 1024 * 1024);
    const b = pool.take(1500 * 1024);
    expect(b.buffer).toBe(a.buffer);
    expect(pool.idleBytes).toBe(0);
    const small = pool.take(4096);
    pool.give(small);
    expect(pool.idleBytes).toBe(0);
    pool.give(Buffer.alloc(1024 * 1024));
    expect(pool.idleBytes).toBe(0);
    pool.give(b);
    expect(() => pool.give(b)).toThrow(/twice/);
  });

  it('keeps no more than its budget', () => {
    const pool = new BufferPool(2 * 1024 * 1024);
    const bufs = [pool.take(1024 * 1024), pool.take(1024 * 1024), pool.take(1024 * 1024)];
    for (const b of bufs) pool.give(b);
    expect(pool.idleBytes).toBe(2 * 1024 * 1024);
  });
});
