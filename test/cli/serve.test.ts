import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/client.js';
import { runStackbd, type CommandResult } from '../helpers/run-command.js';
import { spawnServer } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';


const cli = (args: string[]): Promise<CommandResult> => runStackbd(args);

describe('stackbd serve (the real CLI)', () => {
  let dir: string;
  let disk: string;

  beforeAll(async () => {
    dir = await makeTempDir();
    disk = path.join(dir, 'disk.raw');
    await fs.writeFile(disk, Buffer.alloc(8 << 20));
  });
  afterAll(() => removeDir(dir));

  it('prints help and version', async () => {
    const help = await cli(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('serve');
    const version = await cli(['--version']);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('rejects bad arguments with one line and exit status 2', async () => {
    for (const args of [
      ['serve', '--bogus'],
      ['serve', '--listen', 'localhost:99999', '--export', disk],
      ['serve', '--export', 'a=', '--listen', '127.0.0.1:0'],
      ['serve', '--export', `a=${disk}`, '--export', `a=${disk}`, '--listen', '127.0.0.1:0'],
      ['nonsense'],
    ]) {
      const r = await cli(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n').length, r.stderr).toBe(1);
      expect(r.stderr).toMatch(/^stackbd: /);
    }
  });

  it('fails with one line and exit status 1 when an image cannot be opened', async () => {
    const r = await cli(['serve', '--export', `x=${path.join(dir, 'missing.raw')}`, '--listen', '127.0.0.1:0']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('missing.raw');
  });

  it('serves over TCP and a unix socket at once, and on SIGTERM syncs and exits 0', async () => {
    const socket = path.join(dir, 'nbd.sock');
    const other = path.join(dir, 'other.raw');
    await fs.writeFile(other, Buffer.alloc(1 << 20));
    const server = await spawnServer({ args: ['--export', `vm=${disk}`, '--export', other, '--sync-interval', '0'], socket });
    try {
      const data = randomBytes(65536);
      const tcp = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'vm' });
      await tcp.pwrite(data, 4096);
      const unix = await NbdClient.connect({ kind: 'unix', path: socket }, { exportName: 'vm' });
      expect((await unix.pread(4096, 65536)).equals(data)).toBe(true);
      const list = await NbdClient.list({ kind: 'unix', path: socket });
      expect(list.map((e) => e.name).sort()).toEqual(['', 'vm']);
      tcp.destroy();
      unix.destroy();
    } finally {
      expect(await server.stop('SIGTERM')).toBe(0);
    }
    expect(server.logs()).toContain('server stopped');
    await expect(fs.stat(socket)).rejects.toThrow();
  });

  it('refuses to open one image for writing twice (a second server, or two exports of one file)', async () => {
    const twice = await cli(['serve', '--export', `a=${disk}`, '--export', `b=${disk}`, '--listen', '127.0.0.1:0']);
    expect(twice.code).toBe(1);
    expect(twice.stderr.trim().split('\n')).toHaveLength(1);
    expect(twice.stderr).toContain('in use');
    const server = await spawnServer({ args: ['--export', `vm=${disk}`] });
    try {
      const second = await cli(['serve', '--export', `vm=${disk}`, '--listen', '127.0.0.1:0']);
      expect(second.code).toBe(1);
      expect(second.stderr).toContain(`${disk}: is in use`);
      // Reading it meanwhile is fine.
      const info = await cli(['info', disk]);
      expect(info.code, info.stderr).toBe(0);
    } finally {
      await server.stop();
    }
  });

  it('finishes requests in flight on SIGTERM and every acknowledged write is in the file', async () => {
    const server = await spawnServer({ args: ['--export', `vm=${disk}`] });
    const client = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'vm' });
    const data = randomBytes(1 << 20);
    await client.pwrite(data, 0);
    const writes = [1, 2, 3, 4, 5, 6, 7].map((i) => client.pwrite(data, i << 20));
    const stopped = server.stop('SIGTERM');
    const results = await Promise.allSettled(writes);
    expect(await stopped).toBe(0);
    const file = await fs.readFile(disk);
    expect(file.subarray(0, 1 << 20).equals(data)).toBe(true);
    results.forEach((r, i) => {
      if (r.status === 'fulfilled') expect(file.subarray((i + 1) << 20, (i + 2) << 20).equals(data)).toBe(true);
    });
  });
});
