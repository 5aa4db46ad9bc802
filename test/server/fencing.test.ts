/**
 * Reconnect fencing: overlapping writes land in the order they arrived, across connections. A
 * client like Apple's reconnects on its own; a write still running for the dead connection must
 * never land after a newer write to the same range from the new one.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Layer } from '../../src/formats/layer.js';
import { openRaw } from '../../src/formats/raw.js';
import { NbdClient } from '../../src/nbd/client.js';
import { startInProcessServer, type InProcessServer } from '../helpers/in-process-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

/** A layer whose writes of the given first byte wait `delayMs`, or for `gate` when one is set. */
function slowFor(layer: Layer, marker: number, delayMs: number, gate: { wait: Promise<void> | null }): Layer {
  const wrapper = Object.create(layer) as Layer;
  wrapper.write = async (buf, offset, options) => {
    if (buf[0] === marker) await (gate.wait ?? new Promise((r) => setTimeout(r, delayMs)));
    return layer.write(buf, offset, options);
  };
  return wrapper;
}

describe('overlapping writes across connections', () => {
  let dir: string;
  let srv: InProcessServer;
  const gate: { wait: Promise<void> | null } = { wait: null };

  beforeAll(async () => {
    dir = await makeTempDir();
    const file = path.join(dir, 'disk.raw');
    await fs.writeFile(file, Buffer.alloc(1 << 20));
    const layer = slowFor(await openRaw(file), 0xaa, 300, gate);
    srv = await startInProcessServer([{ name: 'disk', layers: [layer] }]);
  });
  afterAll(async () => {
    await srv.close();
    await removeDir(dir);
  });

  it('lands a newer write from a new connection after an older one still running for a dead connection', async () => {
    const old = await NbdClient.connect(srv.target, { exportName: 'disk', structuredReplies: false });
    void old.pwrite(Buffer.alloc(8192, 0xaa), 0).catch(() => undefined);
    // Give the server time to parse the write and start it, then the client dies.
    await new Promise((r) => setTimeout(r, 50));
    old.destroy();
    const fresh = await NbdClient.connect(srv.target, { exportName: 'disk', structuredReplies: false });
    await fresh.pwrite(Buffer.alloc(4096, 0xbb), 2048);
    await new Promise((r) => setTimeout(r, 400));
    const got = await fresh.pread(0, 8192);
    expect(got.subarray(0, 2048).every((b) => b === 0xaa)).toBe(true);
    expect(got.subarray(2048, 6144).every((b) => b === 0xbb)).toBe(true);
    expect(got.subarray(6144).every((b) => b === 0xaa)).toBe(true);
    await fresh.disconnect();
  });

  it('does not make writes to other ranges wait', async () => {
    let open!: () => void;
    gate.wait = new Promise((resolve) => (open = resolve));
    const a = await NbdClient.connect(srv.target, { exportName: 'disk' });
    let slowDone = false;
    const slow = a.pwrite(Buffer.alloc(4096, 0xaa), 65536).then(() => (slowDone = true));
    // The slow write is held until the gate opens; a disjoint write completes meanwhile.
    await a.pwrite(Buffer.alloc(4096, 0xcc), 131072);
    expect(slowDone).toBe(false);
    open();
    await slow;
    gate.wait = null;
    await a.disconnect();
  });
});
