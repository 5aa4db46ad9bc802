/**
 * A stack whose base is an upstream NBD export (qemu-nbd -r) and whose top is an ASIF overlay,
 * made with `stackbd append`, served by the real `stackbd serve --export vm=nbd+unix://…,o.asif`
 * and used by qemu-io: the base's bytes show through, writes land in the overlay (never in the
 * upstream), qemu:allocation-depth tells the layers apart, and everything is still there when
 * the stack is served again. Needs the built CLI (npm run build).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiskImage } from '../../src/stack/disk-image.js';
import { useTmpDir } from '../formats/helpers/tmp-dir.js';
import { requireTool } from '../helpers/require-tool.js';
import { runCommand, runStackbd } from '../helpers/run-command.js';
import { spawnServer, type SpawnedServer } from '../helpers/spawn-server.js';
import { startQemuNbd, type Upstream } from './helpers/upstream.js';

const KiB = 1024;
const SIZE = 4 * 1024 * KiB;

async function sha(file: string): Promise<string> {
  return createHash('sha256')
    .update(await fs.readFile(file))
    .digest('hex');
}

async function qemuIo(uri: string, commands: string[]): Promise<string> {
  const r = await runCommand('qemu-io', ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), uri]);
  const out = r.stdout + r.stderr;
  expect(r.code, out).toBe(0);
  expect(out, out).not.toMatch(/Pattern verification failed|error|failed/i);
  return out;
}

describe('a stack on an nbd:// base served by stackbd, used by qemu-io', () => {
  const tmp = useTmpDir('nbd-stack');
  let disk: string;
  let overlay: string;
  let upstream: Upstream;
  let baseUri: string;
  let before: string;

  beforeAll(async () => {
    requireTool('qemu-nbd');
    requireTool('qemu-io');
    requireTool('nbdinfo');
    disk = tmp('base.img');
    overlay = tmp('overlay.asif');
    await fs.writeFile(disk, '');
    await fs.truncate(disk, SIZE);
    // The base: 0x11 in [0, 64K), 0x22 in [1M, 1M+128K), holes elsewhere.
    const prep = await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 64k', '-c', 'write -P 0x22 1M 128k', disk]);
    expect(prep.code, prep.stderr).toBe(0);
    before = await sha(disk);
    upstream = await startQemuNbd(tmp('upstream.sock'), disk, 'base', ['-e', '4']);
    baseUri = upstream.uri('base');
  });

  afterAll(async () => {
    await upstream?.stop();
  });

  function expectReadFails(out: { code: number; stdout: string; stderr: string }): void {
    expect(out.stdout + out.stderr).toMatch(/read failed: Input\/output error/);
  }

  async function serve(): Promise<SpawnedServer> {
    return spawnServer({ args: ['--export', `vm=${baseUri},${overlay}`] });
  }

  it('appends an overlay on the nbd:// base with stackbd append', async () => {
    const r = await runStackbd(['append', baseUri, '--new', overlay]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/created overlay layer .*overlay\.asif \(identity of NBD /);
    const image = await DiskImage.open([baseUri, overlay]);
    try {
      expect(image.layers.map((l) => [l.format, l.readOnly])).toEqual([
        ['nbd', true],
        ['asif', true],
      ]);
      expect(image.stack.size).toBe(SIZE);
    } finally {
      await image.close();
    }
  });

  it('serves the stack: base bytes show through, writes land in the overlay only', async () => {
    const server = await serve();
    try {
      const uri = server.uri('vm');
      await qemuIo(uri, ['read -P 0x11 0 64k', 'read -P 0 64k 960k', 'read -P 0x22 1M 128k', 'read -P 0 1152k 2944k']);
      await qemuIo(uri, [
        'write -P 0x33 60k 8k',
        'write -P 0x44 1000 10',
        'write -P 0x55 2M 4k',
        'read -P 0x11 0 1000',
        'read -P 0x44 1000 10',
        'read -P 0x11 1010 60430',
        'read -P 0x33 60k 8k',
        'read -P 0 68k 956k',
        'read -P 0x22 1M 128k',
        'read -P 0x55 2M 4k',
        'flush',
      ]);
      const depth = await runCommand('nbdinfo', ['--map=qemu:allocation-depth', '--json', uri]);
      expect(depth.code, depth.stderr).toBe(0);
      const runs = JSON.parse(depth.stdout) as Array<{ offset: number; length: number; type: number }>;
      const depthAt = (offset: number): number | undefined => runs.find((r) => r.offset <= offset && offset < r.offset + r.length)?.type;
      // 1: the overlay (written sectors), 2: the nbd:// base (its data and its holes alike).
      const offsets = [0, 1000, 62 * KiB, 1024 * KiB, 2048 * KiB, 3072 * KiB];
      expect(offsets.map(depthAt)).toEqual([2, 1, 1, 2, 1, 2]);
    } finally {
      expect(await server.stop()).toBe(0);
    }
    expect(await sha(disk)).toBe(before);
  });

  it('serves the same bytes again after a restart of stackbd', async () => {
    const server = await serve();
    try {
      await qemuIo(server.uri('vm'), ['read -P 0x11 0 1000', 'read -P 0x44 1000 10', 'read -P 0x33 60k 8k', 'read -P 0x22 1M 128k', 'read -P 0x55 2M 4k', 'read -P 0 3M 1M']);
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });

  it('answers EIO and says why in its log, once, when the upstream comes back with another size', async () => {
    const server = await serve();
    try {
      const uri = server.uri('vm');
      await qemuIo(uri, ['read -P 0x22 1M 4k']);
      await upstream.stop('SIGKILL');
      await fs.truncate(disk, SIZE * 2);
      upstream = await startQemuNbd(tmp('upstream.sock'), disk, 'base', ['-e', '4']);
      // Sectors the overlay holds still read; the base's are refused.
      await qemuIo(uri, ['read -P 0x33 60k 8k']);
      expectReadFails(await runCommand('qemu-io', ['-f', 'raw', '-c', 'read 1M 4k', uri]));
      expectReadFails(await runCommand('qemu-io', ['-f', 'raw', '-c', 'read 0 512', uri]));
      const line = await server.waitForLog('size changed');
      expect(line).toMatch(/the upstream's size changed from 4194304 to 8388608 bytes; the base refuses to read from it/);
      expect(server.logs().split('\n').filter((l) => l.includes('size changed'))).toHaveLength(1);
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });
});
