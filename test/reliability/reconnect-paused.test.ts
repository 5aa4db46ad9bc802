/**
 * Reconnect fencing when the dead connection was paused at its bytes-in-flight limit (a case
 * test/server/fencing.test.ts does not reach). A client fills its connection past the limit
 * with slow writes, sends a small write W1 to range X behind them, and dies; a new connection
 * writes W2 to X and gets its reply. When the slow writes finish, the server resumes reading
 * the dead connection and must not run W1 now: it would land after W2, the newer write that
 * was already acknowledged (DESIGN.md: "a write from a dead connection can never land after a
 * newer one"). The scenario is timing-dependent in its details, so it runs five times on
 * separate ranges; any stale write fails the test.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Layer } from '../../src/formats/layer.js';
import { openRaw } from '../../src/formats/raw.js';
import { NbdClient } from '../../src/nbd/client.js';
import { startInProcessServer, type InProcessServer } from '../helpers/in-process-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SLOW_AREA = 4 * MiB;
const ATTEMPTS = 5;

describe('reconnect fencing after a connection paused at its in-flight limit', () => {
  let dir: string;
  let srv: InProcessServer;
  let gate: Promise<void> = Promise.resolve();

  beforeAll(async () => {
    dir = await makeTempDir();
    const file = path.join(dir, 'disk.raw');
    await fs.writeFile(file, Buffer.alloc(8 * MiB));
    const layer = await openRaw(file);
    // Writes into the slow area wait for the test to open the gate.
    const slow = Object.create(layer) as Layer;
    slow.write = async (buf, offset, options) => {
      if (offset >= SLOW_AREA) await gate;
      return layer.write(buf, offset, options);
    };
    srv = await startInProcessServer([{ name: 'disk', layers: [slow] }], { maxBytesInFlight: MiB });
  });
  afterAll(async () => {
    await srv.close();
    await removeDir(dir);
  });

  it(`never runs a write of the dead connection after a newer acknowledged one (${ATTEMPTS} attempts)`, async () => {
    const stale: string[] = [];
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      let open!: () => void;
      gate = new Promise((resolve) => (open = resolve));
      const x = attempt * 64 * KiB;
      const dead = await NbdClient.connect(srv.target, { exportName: 'disk' });
      // 2 MiB of slow writes: the server takes in about 1 MiB of them, then stops reading.
      for (let i = 0; i < 8; i++) void dead.pwrite(Buffer.alloc(256 * KiB, 1), SLOW_AREA + i * 256 * KiB).catch(() => undefined);
      void dead.pwrite(Buffer.alloc(4096, 0xaa), x).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 100));
      dead.destroy();
      await new Promise((r) => setTimeout(r, 50));
      const fresh = await NbdClient.connect(srv.target, { exportName: 'disk' });
      await fresh.pwrite(Buffer.alloc(4096, 0xbb), x);
      expect((await fresh.pread(x, 4096)).every((b) => b === 0xbb)).toBe(true);
      open();
      await new Promise((r) => setTimeout(r, 300));
      const after = await fresh.pread(x, 4096);
      if (!after.every((b) => b === 0xbb)) stale.push(`attempt ${attempt}: range ${x}+4096 holds 0x${after[0].toString(16)} from the dead connection, written after the newer 0xbb`);
      await fresh.disconnect();
    }
    expect(stale).toEqual([]);
  });
});
