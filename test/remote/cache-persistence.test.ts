/**
 * A cache over an http:// base survives a restart (issue 11, item 4): a first server reads the
 * whole disk through the stack (nginx, the origin, logs every request); a second server started
 * on the same files reads the same ranges and the origin sees no range GET for them. The same
 * after the first server is killed with SIGKILL, once the sync timer has made the fills
 * durable: the test waits until the cache file's own map (read by `stackbd map` from the file)
 * holds the whole disk, so the state before the kill is certain.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/client.js';
import { requireTool } from '../helpers/require-tool.js';
import { runStackbd } from '../helpers/run-command.js';
import { spawnServer, type SpawnedServer } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { sparseContent } from '../stack/helpers/all-data-base.js';
import { startNginx, type Nginx } from './helpers/nginx.js';

const MiB = 1024 * 1024;
let dir: string;
let nginx: Nginx;
let content: Buffer;
let url: string;
let n = 0;
const servers: SpawnedServer[] = [];

beforeAll(async () => {
  requireTool('nginx');
  dir = await makeTempDir('stackbd-cache-persist-');
  await fs.mkdir(path.join(dir, 'www'));
  content = sparseContent(16, new Set([0, 2, 3, 7, 11]));
  // A chunk with a little data and zeros around it.
  content.fill(0x42, 13 * MiB + 300_000, 13 * MiB + 310_000);
  await fs.writeFile(path.join(dir, 'www', 'golden.raw'), content);
  nginx = await startNginx({ dir, root: path.join(dir, 'www') });
  url = nginx.url('golden.raw');
}, 60_000);

afterAll(async () => {
  await Promise.allSettled(servers.map((s) => s.stop('SIGKILL')));
  await nginx?.stop();
  await removeDir(dir);
});

async function freshStack(): Promise<string[]> {
  const id = n++;
  const cache = path.join(dir, `cache-${id}.asif`);
  const overlay = path.join(dir, `overlay-${id}.asif`);
  for (const args of [['append', url, '--new', cache, '--type', 'cache'], ['append', url, cache, '--new', overlay]]) {
    const r = await runStackbd(args);
    expect(r.code, r.stderr).toBe(0);
  }
  return [url, cache, overlay];
}

async function serve(paths: string[], extra: string[] = []): Promise<SpawnedServer> {
  const server = await spawnServer({ args: ['--export', `vm=${paths.join(',')}`, ...extra] });
  servers.push(server);
  return server;
}

/** Reads the whole export in 256 KiB requests, 8 at once, and returns its sha256. */
async function readWhole(server: SpawnedServer): Promise<string> {
  const client = await NbdClient.connect({ kind: 'tcp', host: server.host, port: server.port }, { exportName: 'vm' });
  try {
    const size = client.size;
    const pieces: Buffer[] = [];
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < size) {
        const at = next;
        next += 256 * 1024;
        pieces[at / (256 * 1024)] = await client.pread(at, Math.min(256 * 1024, size - at));
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    return createHash('sha256').update(Buffer.concat(pieces)).digest('hex');
  } finally {
    await client.disconnect();
  }
}

/** Range GETs the origin logged after `mark` entries (opening a base asks for bytes=0-0: not a read). */
async function readsSince(mark: number): Promise<number> {
  return (await nginx.accessLog()).slice(mark).filter((e) => e.method === 'GET' && e.range !== '' && e.range !== 'bytes=0-0').length;
}

/** Bytes the cache file's own map (read from the file) holds: depth 1 of `map URL CACHE`. */
async function cacheHolds(paths: string[], state?: 'data' | 'zero'): Promise<number> {
  const r = await runStackbd(['map', '--json', paths[0], paths[1]]);
  expect(r.code, r.stderr).toBe(0);
  const entries = JSON.parse(r.stdout) as Array<{ length: number; depth: number; state: string }>;
  return entries.filter((e) => e.depth === 1 && e.state !== 'absent' && (state === undefined || e.state === state)).reduce((s, e) => s + e.length, 0);
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('a cache layer over an http base, across restarts', () => {
  it('after a clean restart, reading everything again asks the origin for nothing', async () => {
    const paths = await freshStack();
    const first = await serve(paths);
    const mark0 = (await nginx.accessLog()).length;
    expect(await readWhole(first)).toBe(sha(content));
    expect(await readsSince(mark0)).toBeGreaterThan(0);
    expect(await first.stop()).toBe(0);
    expect(await cacheHolds(paths)).toBe(content.length);
    // The ten chunks of zeros are zero chunks of the cache, not written zeros.
    expect(await cacheHolds(paths, 'zero')).toBe(10 * MiB);

    const second = await serve(paths);
    const mark = (await nginx.accessLog()).length;
    expect(await readWhole(second)).toBe(sha(content));
    expect(await readsSince(mark)).toBe(0);
    await second.stop();
  });

  it('after SIGKILL, once the sync timer made the fills durable, the same', async () => {
    const paths = await freshStack();
    const first = await serve(paths, ['--sync-interval', '1']);
    expect(await readWhole(first)).toBe(sha(content));
    // The timer syncs the fills: wait until the cache file itself says it holds the whole disk.
    for (let i = 0; (await cacheHolds(paths)) < content.length; i++) {
      if (i > 60) throw new Error('the sync timer never made the cache fills durable');
      await new Promise((r) => setTimeout(r, 250));
    }
    await first.stop('SIGKILL');

    const second = await serve(paths);
    const mark = (await nginx.accessLog()).length;
    expect(await readWhole(second)).toBe(sha(content));
    expect(await readsSince(mark)).toBe(0);
    await second.stop();
    const check = await runStackbd(['check', paths[1]]);
    expect([0, 3], check.stdout + check.stderr).toContain(check.code);
  });
});
