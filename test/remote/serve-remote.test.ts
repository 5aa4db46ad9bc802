/**
 * A remote base in the real command line: nginx holds the golden image; `stackbd append` puts
 * an ASIF cache layer and an overlay on the URL; `stackbd serve` exports the stack; nbdcopy,
 * qemu-img compare and nbdinfo --map read it over NBD and it matches the local file. Through
 * the fault proxy, a read that fails for good is one EIO and the server goes on serving. The
 * URL's query (a presigned signature) never shows in logs or in the export description.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireTool } from '../helpers/require-tool.js';
import { runCommand, runStackbd } from '../helpers/run-command.js';
import { spawnServer, type SpawnedServer } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { startNginx, type Nginx } from './helpers/nginx.js';

const MiB = 1024 * 1024;
let dir: string;
let nginx: Nginx;
let proxy: FaultProxy;
let local: string;
let content: Buffer;
const servers: SpawnedServer[] = [];

async function serve(args: string[]): Promise<SpawnedServer> {
  const server = await spawnServer({ args });
  servers.push(server);
  return server;
}

beforeAll(async () => {
  for (const tool of ['nbdcopy', 'nbdinfo', 'qemu-img', 'qemu-io']) requireTool(tool);
  dir = await makeTempDir('stackbd-remote-serve-');
  await fs.mkdir(path.join(dir, 'www'));
  // 8 MiB: random data with zero stretches, so the stack's map and the compare have both.
  content = Buffer.alloc(8 * MiB);
  for (let at = 0; at < content.length; at += 2 * MiB) randomBytes(MiB).copy(content, at);
  local = path.join(dir, 'local.raw');
  await fs.writeFile(local, content);
  await fs.writeFile(path.join(dir, 'www', 'golden.raw'), content);
  nginx = await startNginx({ dir, root: path.join(dir, 'www') });
  proxy = await startFaultProxy({ upstreamPort: nginx.port });
}, 120_000);

afterAll(async () => {
  await Promise.allSettled(servers.map((s) => s.stop()));
  await proxy?.close();
  await nginx?.stop();
  await removeDir(dir);
});

describe('stackbd with an http:// base', () => {
  it('appends a cache and an overlay on the URL, serves the stack, and reads back the base exactly', async () => {
    const url = `${nginx.url('golden.raw')}?sig=topsecret`;
    const cache = path.join(dir, 'cache.asif');
    const overlay = path.join(dir, 'overlay.asif');
    const a = await runStackbd(['append', url, '--new', cache, '--type', 'cache']);
    expect(a.stderr).toBe('');
    expect(a.code).toBe(0);
    const b = await runStackbd(['append', url, cache, '--new', overlay, '--remote-block-size', '64K']);
    expect(b.code).toBe(0);
    const info = await runStackbd(['info', '--json', url, cache, overlay]);
    expect(info.code).toBe(0);
    const report = JSON.parse(info.stdout) as { virtualSize: number; chain: { valid: boolean }; layers: Array<{ format: string; path: string; details?: { etag: string; pinned: boolean } }> };
    expect(report.virtualSize).toBe(content.length);
    expect(report.chain.valid).toBe(true);
    expect(report.layers[0]).toMatchObject({ format: 'http', path: `http://127.0.0.1:${nginx.port}/golden.raw?…`, details: { pinned: true } });
    expect(info.stdout).not.toContain('topsecret');
    const text = await runStackbd(['info', url]);
    expect(text.stdout).toMatch(/pinned by: +ETag "/);

    const server = await serve(['--export', `vm=${url},${cache},${overlay}`, '--remote-connections', '4']);
    const copy = path.join(dir, 'copy.raw');
    const c = await runCommand('nbdcopy', [server.uri('vm'), copy]);
    expect(c.stderr).toBe('');
    expect(c.code).toBe(0);
    expect((await fs.readFile(copy)).equals(content)).toBe(true);
    const cmp = await runCommand('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', local, server.uri('vm')]);
    expect(cmp.stdout).toContain('Images are identical');
    const map = await runCommand('nbdinfo', ['--map', server.uri('vm')]);
    expect(map.code).toBe(0);
    expect(map.stdout).toMatch(/data/);
    const desc = await runCommand('nbdinfo', ['--json', server.uri('vm')]);
    expect(desc.stdout).toContain(`http://127.0.0.1:${nginx.port}/golden.raw?…`);
    expect(desc.stdout).not.toContain('topsecret');

    // A write lands in the overlay; the remote base is never written.
    const w = await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 1M 64k', server.uri('vm')]);
    expect(w.code).toBe(0);
    const r = await runCommand('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0xab 1M 64k', server.uri('vm')]);
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
    expect(r.code).toBe(0);
    await server.stop();
    expect(server.logs()).not.toContain('topsecret');
    expect((await fs.readFile(path.join(dir, 'www', 'golden.raw'))).equals(content)).toBe(true);

    // What the clients read is in the cache layer now.
    const cached = await runStackbd(['map', '--json', url, cache]);
    const entries = JSON.parse(cached.stdout) as Array<{ depth: number; state: string; length: number }>;
    const inCache = entries.filter((e) => e.depth === 1 && e.state === 'data').reduce((n, e) => n + e.length, 0);
    expect(inCache).toBeGreaterThanOrEqual(4 * MiB);
  });

  it('converts the URL into a local image identical to the base', async () => {
    const out = path.join(dir, 'converted.raw');
    const c = await runStackbd(['convert', nginx.url('golden.raw'), '-O', out]);
    expect(c.code).toBe(0);
    expect((await fs.readFile(out)).equals(content)).toBe(true);
  });

  it('refuses a URL above the base, and names a missing object in one line', async () => {
    const cache = path.join(dir, 'c2.asif');
    await runStackbd(['append', local, '--new', cache, '--type', 'cache']);
    const above = await runStackbd(['info', local, nginx.url('golden.raw')]);
    expect(above.code).toBe(1);
    expect(above.stderr).toMatch(/a remote base can only be the base of a stack/);
    const missing = await runStackbd(['info', nginx.url('missing.raw'), '--remote-retries', '0']);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim()).toBe(`stackbd: http://127.0.0.1:${nginx.port}/missing.raw: GET was refused: HTTP 404`);
  });

  it('sends the --header-file headers, and refuses a bad header file as a usage error', async () => {
    const headers = path.join(dir, 'headers.txt');
    await fs.writeFile(headers, '# for the origin\nAuthorization: Bearer golden-token\n');
    const before = (await nginx.accessLog()).length;
    const ok = await runStackbd(['info', nginx.url('golden.raw'), '--header-file', headers]);
    expect(ok.code).toBe(0);
    const sent = (await nginx.accessLog()).slice(before);
    expect(sent.length).toBeGreaterThan(0);
    expect(sent.every((e) => e.authorization === 'Bearer golden-token')).toBe(true);
    await fs.writeFile(headers, 'Range: bytes=0-1\n');
    const bad = await runStackbd(['info', nginx.url('golden.raw'), '--header-file', headers]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/line 1: Range is set by stackbd/);
  });

  it('keeps serving when one read fails for good: that read gets EIO, the next one is served', async () => {
    const server = await serve(['--export', `flaky=${proxy.url('golden.raw')}`, '--remote-retries', '1', '--remote-block-size', '64K', '--read-only']);
    proxy.inject('reset', 2);
    const bad = await runCommand('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0 3M 4k', server.uri('flaky')]);
    expect(bad.stdout + bad.stderr).toMatch(/Input\/output error/);
    const good = await runCommand('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0 3M 4k', server.uri('flaky')]);
    expect(good.stdout + good.stderr).not.toMatch(/error|failed/i);
    expect(good.code).toBe(0);
    const copy = path.join(dir, 'flaky.raw');
    proxy.inject('short', 1);
    expect((await runCommand('nbdcopy', [server.uri('flaky'), copy])).code).toBe(0);
    expect((await fs.readFile(copy)).equals(content)).toBe(true);
    await server.stop();
  });

  it('adds an export on a URL through the admin API', async () => {
    const socket = path.join(dir, 'admin.sock');
    const server = await serve(['--export', `local=${local}`, '--admin-socket', socket]);
    const added = await runStackbd(['ctl', 'add', `web=${nginx.url('golden.raw')}`, '--read-only', '--socket', socket]);
    expect(added.code).toBe(0);
    const cmp = await runCommand('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', local, server.uri('web')]);
    expect(cmp.stdout).toContain('Images are identical');
    await server.stop();
  });

  it('takes URLs in a config file as they are', async () => {
    const config = path.join(dir, 'stackbd.json');
    await fs.writeFile(config, JSON.stringify({ exports: [{ name: 'cfg', layers: [nginx.url('golden.raw')], readOnly: true }] }));
    const server = await serve(['--config', config]);
    const cmp = await runCommand('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', local, server.uri('cfg')]);
    expect(cmp.stdout).toContain('Images are identical');
    await server.stop();
  });
});
