import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/client.js';
import { startInProcessServer, type InProcessServer } from '../helpers/in-process-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const SIZE = 16 * 1024 * 1024;

describe('pipelined requests against a RAW export', () => {
  let dir: string;
  let srv: InProcessServer;
  let file: string;

  beforeAll(async () => {
    dir = await makeTempDir();
    file = path.join(dir, 'disk.raw');
    await fs.writeFile(file, Buffer.alloc(0));
    await fs.truncate(file, SIZE);
    srv = await startInProcessServer([{ name: 'disk', rawPath: file }]);
  });
  afterAll(async () => {
    await srv.close();
    await removeDir(dir);
  });

  for (const mode of ['simple', 'structured', 'extended'] as const) {
    it(`keeps 64 random reads and writes in flight and matches a model (${mode} replies)`, async () => {
      const client = await NbdClient.connect(srv.target, {
        exportName: 'disk',
        structuredReplies: mode !== 'simple',
        extendedHeaders: mode === 'extended',
      });
      expect(client.mode).toBe(mode);
      expect(client.size).toBe(SIZE);
      const model = Buffer.alloc(SIZE);
      // Start from a known state (earlier cases wrote too).
      await client.zero(0, SIZE);
      // Non-overlapping batches: the protocol does not order overlapping requests in flight.
      for (let round = 0; round < 8; round++) {
        const slots = [...Array(64).keys()].sort(() => Math.random() - 0.5);
        const slotSize = SIZE / 64;
        await Promise.all(
          slots.map(async (slot, i) => {
            const length = 1 + Math.floor(Math.random() * 20000);
            const offset = slot * slotSize + Math.floor(Math.random() * (slotSize - length));
            if (i % 2 === 0) {
              const data = randomBytes(length);
              data.copy(model, offset);
              await client.pwrite(data, offset);
            } else {
              const got = await client.pread(offset, length);
              expect(got.equals(model.subarray(offset, offset + length))).toBe(true);
            }
          }),
        );
      }
      const all = await client.pread(0, SIZE);
      expect(all.equals(model)).toBe(true);
      await client.disconnect();
    });
  }

  it('makes a write on one connection visible on another after FLUSH (multi-conn)', async () => {
    const a = await NbdClient.connect(srv.target, { exportName: 'disk' });
    const b = await NbdClient.connect(srv.target, { exportName: 'disk' });
    expect(a.flags & 0x100).toBe(0x100);
    const data = randomBytes(65536);
    await a.pwrite(data, 1 << 20);
    await a.flush();
    expect((await b.pread(1 << 20, 65536)).equals(data)).toBe(true);
    await Promise.all([a.disconnect(), b.disconnect()]);
  });

  it('writes reach the file', async () => {
    const client = await NbdClient.connect(srv.target, { exportName: 'disk' });
    const data = randomBytes(4096);
    await client.pwrite(data, 8192, { fua: true });
    await client.disconnect();
    const fd = await fs.open(file, 'r');
    const got = Buffer.alloc(4096);
    await fd.read(got, 0, 4096, 8192);
    await fd.close();
    expect(got.equals(data)).toBe(true);
  });
});
