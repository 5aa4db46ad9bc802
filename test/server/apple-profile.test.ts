/**
 * A client that behaves like Apple's VZNetworkBlockDeviceStorageDeviceAttachment as publicly
 * traced: INFO then GO with NO_ZEROES, simple replies only, whole-device TRIM and WRITE_ZEROES,
 * never FLUSH, and an abrupt disconnect in the middle of writes followed by an immediate
 * reconnect. The export is a stack (RAW base + ASIF overlay) served by the real CLI.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/client.js';
import { DiskImage } from '../../src/stack/disk-image.js';
import { runStackbd } from '../helpers/run-command.js';
import { spawnServer } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;

function appleClient(port: number): Promise<NbdClient> {
  return NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port }, { exportName: 'vm', structuredReplies: false, infoBeforeGo: true, noZeroes: true });
}

describe("Apple's client profile", () => {
  let dir: string;
  let base: string;
  let overlay: string;

  beforeAll(async () => {
    dir = await makeTempDir();
    base = path.join(dir, 'base.raw');
    overlay = path.join(dir, 'overlay.asif');
    await fs.writeFile(base, randomBytes(SIZE));
    expect((await runStackbd(['append', base, '--new', overlay])).code).toBe(0);
  });
  afterAll(() => removeDir(dir));

  it('keeps size, flags and data across an abrupt reconnect, and syncs without FLUSH', async () => {
    const baseHash = createHash('sha256').update(await fs.readFile(base)).digest('hex');
    const server = await spawnServer({ args: ['--export', `vm=${base},${overlay}`, '--sync-interval', '1'] });
    const model = await fs.readFile(base);
    let killed = false;
    try {
      const first = await appleClient(server.port);
      expect(first.mode).toBe('simple');
      const { size, flags } = first;
      expect(size).toBe(SIZE);
      // mkfs-style: discard and zero the whole device.
      await first.trim(0, SIZE);
      await first.zero(0, SIZE);
      model.fill(0);
      const data = randomBytes(4 * MiB);
      await first.pwrite(data, 8 * MiB);
      data.copy(model, 8 * MiB);
      // Writes in flight when the connection drops: each either landed whole or not at all.
      const inFlight = [0, 1, 2, 3].map((i) => first.pwrite(Buffer.alloc(MiB, 0x40 + i), 20 * MiB + i * MiB).then(() => i));
      first.destroy();
      const landed = (await Promise.allSettled(inFlight)).filter((r) => r.status === 'fulfilled').map((r) => (r as PromiseFulfilledResult<number>).value);
      for (const i of landed) model.fill(0x40 + i, 20 * MiB + i * MiB, 21 * MiB + i * MiB);

      const second = await appleClient(server.port);
      expect([second.size, second.flags]).toEqual([size, flags]);
      const got = await second.pread(8 * MiB, 4 * MiB);
      expect(got.equals(data)).toBe(true);
      for (let i = 0; i < 4; i++) {
        const block = await second.pread(20 * MiB + i * MiB, MiB);
        const whole = block.every((b) => b === 0x40 + i) || block.every((b) => b === 0);
        expect(whole, `block ${i} is neither old nor new`).toBe(true);
        block.copy(model, 20 * MiB + i * MiB);
      }
      const more = randomBytes(MiB);
      await second.pwrite(more, 40 * MiB);
      more.copy(model, 40 * MiB);
      // No FLUSH, the connection stays open: the sync interval must make it durable.
      await new Promise((r) => setTimeout(r, 2500));
      process.kill(server.pid, 'SIGKILL');
      killed = true;
      second.destroy();
    } finally {
      if (!killed) await server.stop();
    }
    await server.stop();
    const image = await DiskImage.open([base, overlay]);
    try {
      const all = Buffer.alloc(SIZE);
      await image.stack.read(all, 0);
      expect(all.equals(model)).toBe(true);
    } finally {
      await image.close();
    }
    const check = await runStackbd(['check', overlay]);
    expect([0, 3], check.stdout).toContain(check.code);
    expect(createHash('sha256').update(await fs.readFile(base)).digest('hex')).toBe(baseHash);
  });
});
