/**
 * Reconnect fencing: overlapping writes land in the order they arrived, across connections. A
 * client like Apple's reconnects on its own; a write still running for the dead connection must
 * never land after a newer write to the same range from the new one. Each test holds the slow
 * write in the layer (a gate it opens itself) and checks it got there: the old write is running,
 * the newer one has reached the server and waits, and only then does the gate open.
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

/** A layer whose writes of the given first byte wait for `gate.wait` (when set); `entered` counts the writes that reached it, by first byte. */
function slowFor(layer: Layer, marker: number, gate: { wait: Promise<void> | null }, entered: Map<number, number>): Layer {
  const wrapper = Object.create(layer) as Layer;
  wrapper.write = async (buf, offset, options) => {
    entered.set(buf[0], (entered.get(buf[0]) ?? 0) + 1);
    if (buf[0] === marker && gate.wait) await gate.wait;
    return layer.write(buf, offset, options);
  };
  return wrapper;
}

describe('overlapping writes across connections', () => {
  let dir: string;
  let srv: InProcessServer;
  const gate: { wait: Promise<void> | null } = { wait: null };
  const entered = new Map<number, number>();

  beforeAll(async () => {
    dir = await makeTempDir();
    const file = path.join(dir, 'disk.raw');
    await fs.writeFile(file, Buffer.alloc(1 << 20));
    const layer = slowFor(await openRaw(file), 0xaa, gate, entered);
    srv = await startInProcessServer([{ name: 'disk', layers: [layer] }]);
  });
  afterAll(async () => {
    await srv.close();
    await removeDir(dir);
  });

  it('lands a newer write from a new connection after an older one still running for a dead connection', async () => {
    let open!: () => void;
    gate.wait = new Promise((resolve) => (open = resolve));
    entered.clear();
    const old = await NbdClient.connect(srv.target, { exportName: 'disk', structuredReplies: false });
    const oldPort = socketOf(old).localPort!;
    void old.pwrite(Buffer.alloc(8192, 0xaa), 0).catch(() => undefined);
    // The old write is running (held in the layer) when its client dies, and the server knows.
    await until(() => entered.get(0xaa) === 1, 'the old write reached the layer');
    old.destroy();
    await until(() => tcpState(srv.port, oldPort) === 'CLOSE_WAIT', "the dead client's FIN reached the server");

    const fresh = await NbdClient.connect(srv.target, { exportName: 'disk', structuredReplies: false });
    let newerDone = false;
    const newer = fresh.pwrite(Buffer.alloc(4096, 0xbb), 2048).then(() => (newerDone = true));
    // The newer write has reached the server and waits behind the old one (or, wrongly, is done).
    await until(() => srv.server.bytesInFlight === 8192 + 4096 || newerDone, 'both writes in flight at the server');
    expect(entered.get(0xbb) ?? 0, 'the newer write did not start while the older one runs').toBe(0);
    expect(newerDone).toBe(false);
    open();
    await newer;
    await until(() => srv.server.connectionCount === 1, "the dead connection's session ended");
    gate.wait = null;
    const got = await fresh.pread(0, 8192);
    expect(got.subarray(0, 2048).every((b) => b === 0xaa)).toBe(true);
    expect(got.subarray(2048, 6144).every((b) => b === 0xbb)).toBe(true);
    expect(got.subarray(6144).every((b) => b === 0xaa)).toBe(true);
    await fresh.disconnect();
  });

  it('does not make writes to other ranges wait', async () => {
    let open!: () => void;
    gate.wait = new Promise((resolve) => (open = resolve));
    entered.clear();
    const a = await NbdClient.connect(srv.target, { exportName: 'disk' });
    let slowDone = false;
    const slow = a.pwrite(Buffer.alloc(4096, 0xaa), 65536).then(() => (slowDone = true));
    // The slow write is held in the layer until the gate opens; a disjoint write completes meanwhile.
    await until(() => entered.get(0xaa) === 1, 'the slow write reached the layer');
    await a.pwrite(Buffer.alloc(4096, 0xcc), 131072);
    expect(slowDone).toBe(false);
    open();
    await slow;
    gate.wait = null;
    await a.disconnect();
  });
});
