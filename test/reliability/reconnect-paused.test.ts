/**
 * Reconnect fencing when the dead connection was paused at its bytes-in-flight limit (a case
 * test/server/fencing.test.ts does not reach). A client fills its connection past the limit
 * with slow writes, sends a small write W1 to range X behind them, and dies; a new connection
 * writes W2 to X and gets its reply. When the slow writes finish, the server resumes reading
 * the dead connection and must not run W1 now: it would land after W2, the newer write that
 * was already acknowledged (DESIGN.md: "a write from a dead connection can never land after a
 * newer one"). Each step checks it reached the state it describes before the next: the server
 * holds the dead connection at its limit with W1 unread, the client's FIN has reached the server
 * (the fencing is exact from there on: docs/reliability.md), and the dead connection's session
 * has ended before X is read back. It runs five times on separate ranges.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Layer } from '../../src/formats/layer.js';
import { openRaw } from '../../src/formats/raw.js';
import { NbdClient } from '../../src/nbd/client.js';
import { socketOf } from '../helpers/client-socket.js';
import { startInProcessServer, type InProcessServer } from '../helpers/in-process-server.js';
import { tcpState, until } from '../helpers/tcp-state.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SLOW_AREA = 4 * MiB;
const ATTEMPTS = 5;

describe('reconnect fencing after a connection paused at its in-flight limit', () => {
  let dir: string;
  let srv: InProcessServer;
  let gate: Promise<void> = Promise.resolve();
  /** The first slow write waits for this one instead (the reset case lets it finish early). */
  let firstGate: Promise<void> = Promise.resolve();

  beforeAll(async () => {
    dir = await makeTempDir();
    const file = path.join(dir, 'disk.raw');
    await fs.writeFile(file, Buffer.alloc(8 * MiB));
    const layer = await openRaw(file);
    // Writes into the slow area wait for the test to open the gate.
    const slow = Object.create(layer) as Layer;
    slow.write = async (buf, offset, options) => {
      if (offset === SLOW_AREA) await firstGate;
      else if (offset >= SLOW_AREA) await gate;
      return layer.write(buf, offset, options);
    };
    srv = await startInProcessServer([{ name: 'disk', layers: [slow] }], { maxBytesInFlight: MiB });
  });
  afterAll(async () => {
    await srv.close();
    await removeDir(dir);
  });

  /**
   * One attempt: W1 of the dead connection to range `x` must not land after W2. With
   * `resetFirst`, one slow write finishes after the client's FIN has arrived: its reply reaches a
   * closed socket, whose kernel answers RST, so when the server resumes it reads the held bytes,
   * then ECONNRESET (no end of stream, the socket destroyed before its 'close' event).
   */
  async function attempt(n: number, x: number, resetFirst: boolean): Promise<string | null> {
    let open!: () => void;
    let openFirst!: () => void;
    gate = new Promise((resolve) => (open = resolve));
    firstGate = new Promise((resolve) => (openFirst = resolve));
    const dead = await NbdClient.connect(srv.target, { exportName: 'disk' });
    const deadPort = socketOf(dead).localPort!;
    // 2 MiB of slow writes: the server takes in a little over 1 MiB of them (they cannot
    // finish), then stops reading, with W1 behind the rest.
    for (let i = 0; i < 8; i++) void dead.pwrite(Buffer.alloc(256 * KiB, 1), SLOW_AREA + i * 256 * KiB).catch(() => undefined);
    void dead.pwrite(Buffer.alloc(4096, 0xaa), x).catch(() => undefined);
    await until(() => srv.server.bytesInFlight > MiB, 'the dead connection at its in-flight limit');
    const takenIn = srv.server.bytesInFlight;
    expect(takenIn, 'the server stopped reading before W1').toBeLessThan(8 * 256 * KiB);
    dead.destroy();
    await until(() => tcpState(srv.port, deadPort) === 'CLOSE_WAIT', "the dead client's FIN reached the server");
    expect(srv.server.bytesInFlight, 'still paused: nothing more was taken in').toBe(takenIn);
    if (resetFirst) {
      openFirst();
      // Still above half the limit without it, so the session stays paused.
      expect(takenIn - 256 * KiB).toBeGreaterThan(MiB / 2);
      await until(() => tcpState(srv.port, deadPort) === null, 'the reply to the closed client was answered with RST');
    }
    const fresh = await NbdClient.connect(srv.target, { exportName: 'disk' });
    await fresh.pwrite(Buffer.alloc(4096, 0xbb), x);
    expect((await fresh.pread(x, 4096)).every((b) => b === 0xbb)).toBe(true);
    openFirst();
    open();
    // The slow writes finish, the server resumes reading the dead connection and meets W1
    // there; once that session has ended, whatever it was going to do is done.
    await until(() => srv.server.connectionCount === 1, "the dead connection's session ended");
    const after = await fresh.pread(x, 4096);
    await fresh.disconnect();
    return after.every((b) => b === 0xbb) ? null : `attempt ${n}: range ${x}+4096 holds 0x${after[0].toString(16)} from the dead connection, written after the newer 0xbb`;
  }

  it(`never runs a write of the dead connection after a newer acknowledged one (${ATTEMPTS} attempts)`, async () => {
    const stale: string[] = [];
    for (let n = 0; n < ATTEMPTS; n++) {
      const found = await attempt(n, n * 64 * KiB, false);
      if (found) stale.push(found);
    }
    expect(stale).toEqual([]);
  });

  it(`nor when the dead connection was reset while paused (${ATTEMPTS} attempts)`, async () => {
    const stale: string[] = [];
    for (let n = 0; n < ATTEMPTS; n++) {
      const found = await attempt(n, (ATTEMPTS + n) * 64 * KiB, true);
      if (found) stale.push(found);
    }
    expect(stale).toEqual([]);
  });
});
