/**
 * `stackbd warm`, `serve --record-reads` and `stackbd ctl warm` against a real origin (nginx,
 * requests counted in its access log): a warm fills the cache of a stack on an http:// base,
 * zeros as zero chunks; warming again asks the origin for nothing; a recorded boot's reads are
 * warmed and nothing else; a served export is warmed through the admin API while its clients
 * go on (their requests are answered while the warm waits on the origin).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/client.js';
import { requireTool } from '../helpers/require-tool.js';
import { runCommand, runStackbd, type CommandResult } from '../helpers/run-command.js';
import { spawnServer, type SpawnedServer } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { startFaultProxy, type FaultProxy } from '../remote/helpers/fault-proxy.js';
import { startNginx, type AccessEntry, type Nginx } from '../remote/helpers/nginx.js';
import { sparseContent } from '../stack/helpers/all-data-base.js';

const MiB = 1024 * 1024;
const DATA_CHUNKS = new Set([0, 1, 2, 6, 9, 10, 17, 23]);
let dir: string;
let nginx: Nginx;
let proxy: FaultProxy;
let content: Buffer;
let url: string;
let n = 0;
const servers: SpawnedServer[] = [];

beforeAll(async () => {
  for (const tool of ['qemu-io', 'nginx']) requireTool(tool);
  dir = await makeTempDir('stackbd-warm-cli-');
  await fs.mkdir(path.join(dir, 'www'));
  content = sparseContent(24, DATA_CHUNKS);
  await fs.writeFile(path.join(dir, 'www', 'golden.raw'), content);
  nginx = await startNginx({ dir, root: path.join(dir, 'www') });
  proxy = await startFaultProxy({ upstreamPort: nginx.port });
  url = nginx.url('golden.raw');
}, 60_000);

afterAll(async () => {
  await Promise.allSettled(servers.map((s) => s.stop()));
  await proxy?.close();
  await nginx?.stop();
  await removeDir(dir);
});

function ok(r: CommandResult, what: string): CommandResult {
  expect(r.code, `${what}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r;
}

/** A fresh cache (and overlay) on `base`; returns their paths. */
async function freshStack(base: string, overlay = true): Promise<{ cache: string; overlay: string }> {
  const id = n++;
  const cache = path.join(dir, `cache-${id}.asif`);
  const top = path.join(dir, `overlay-${id}.asif`);
  ok(await runStackbd(['append', base, '--new', cache, '--type', 'cache']), 'append cache');
  if (overlay) ok(await runStackbd(['append', base, cache, '--new', top]), 'append overlay');
  return { cache, overlay: top };
}

/** The range GETs nginx logged after `mark` entries. */
async function rangeGets(mark: number): Promise<AccessEntry[]> {
  // Opening a base asks for bytes=0-0 (range support, the object's identity): not a read.
  return (await nginx.accessLog()).slice(mark).filter((e) => e.method === 'GET' && e.range !== '' && e.range !== 'bytes=0-0');
}

/** [start, end] of each `Range: bytes=a-b` GET. */
function spans(entries: AccessEntry[]): Array<[number, number]> {
  return entries.map((e) => {
    const m = /^bytes=(\d+)-(\d+)$/.exec(e.range);
    if (!m) throw new Error(`unexpected Range ${e.range}`);
    return [Number(m[1]), Number(m[2]) + 1];
  });
}

interface MapEntry {
  offset: number;
  length: number;
  state: string;
  depth: number;
}

async function mapOf(paths: string[]): Promise<MapEntry[]> {
  return JSON.parse(ok(await runStackbd(['map', '--json', ...paths]), 'map').stdout) as MapEntry[];
}

/** Bytes the cache (depth `depth`) holds, by state. */
function held(map: MapEntry[], depth: number): { data: number; zero: number } {
  const out = { data: 0, zero: 0 };
  for (const e of map) if (e.depth === depth && (e.state === 'data' || e.state === 'zero')) out[e.state] += e.length;
  return out;
}

describe('stackbd warm', () => {
  it('fills the whole cache from the origin (zero chunks as zeros), and a second warm asks the origin for nothing', async () => {
    const { cache, overlay } = await freshStack(url);
    const mark = (await nginx.accessLog()).length;
    const r = ok(await runStackbd(['warm', url, cache, overlay, '--json', '--jobs', '4']), 'warm');
    const result = JSON.parse(r.stdout) as Record<string, number | string>;
    expect(result).toMatchObject({ requestedBytes: 24 * MiB, readBytes: 24 * MiB, cachedBytes: 0, storedDataBytes: 8 * MiB, storedZeroBytes: 16 * MiB, stopped: 'done' });
    const gets = await rangeGets(mark);
    expect(gets.reduce((s, e) => s + spans([e]).reduce((t, [a, b]) => t + b - a, 0), 0)).toBe(24 * MiB);
    expect(held(await mapOf([url, cache, overlay]), 2)).toEqual({ data: 8 * MiB, zero: 16 * MiB });

    const again = (await nginx.accessLog()).length;
    const second = ok(await runStackbd(['warm', url, cache, overlay]), 'warm again');
    expect(second.stdout).toMatch(/^warmed .*cache-\d+\.asif: read 0 B from below the cache .* skipped 24 MiB already cached/);
    expect(await rangeGets(again)).toEqual([]);
    // What the stack reads now is the origin's object, from the cache.
    const copy = path.join(dir, 'copy.raw');
    ok(await runStackbd(['convert', url, cache, overlay, '-O', copy]), 'convert');
    expect((await fs.readFile(copy)).equals(content)).toBe(true);
    expect(await rangeGets(again)).toEqual([]);
  });

  it('shows a progress bar with -p, and warms only the ranges of a file', async () => {
    const { cache } = await freshStack(url, false);
    const ranges = path.join(dir, 'some.ranges');
    await fs.writeFile(ranges, '# two ranges\n0x100000 0x100000\n17825792 4096\n');
    const mark = (await nginx.accessLog()).length;
    const r = ok(await runStackbd(['warm', '--ranges', ranges, url, cache, '-p']), 'warm --ranges');
    expect(r.stderr).toMatch(/warm \[.*\] 100% \| /);
    const got = spans(await rangeGets(mark));
    // The remote reader fetches whole blocks (64 KiB): nothing beyond the blocks of the ranges.
    for (const [a, b] of got) expect(a >= MiB && b <= 2 * MiB ? true : a >= 17 * MiB && b <= 17 * MiB + 64 * 1024, `GET ${a}-${b}`).toBe(true);
    expect(held(await mapOf([url, cache]), 1)).toEqual({ data: MiB + 4096, zero: 0 });
  });

  it('says clearly what is wrong: no cache layer, a bad ranges file, a cache a server holds', async () => {
    const noCache = await runStackbd(['warm', url]);
    expect(noCache.code).toBe(1);
    expect(noCache.stderr.trim()).toBe('stackbd: the stack has no cache layer to warm');
    const { cache, overlay } = await freshStack(url);
    const bad = path.join(dir, 'bad.ranges');
    await fs.writeFile(bad, '0 4096\nfour kilobytes\n');
    const badRanges = await runStackbd(['warm', '--ranges', bad, url, cache]);
    expect(badRanges.code).toBe(2);
    expect(badRanges.stderr.trim()).toBe(`stackbd: --ranges ${bad}: line 2: expected "OFFSET LENGTH" (decimal or 0x hex), not "four kilobytes"`);
    const server = await spawnServer({ args: ['--export', `vm=${url},${cache},${overlay}`] });
    servers.push(server);
    const busy = await runStackbd(['warm', url, cache, overlay]);
    expect(busy.code).toBe(1);
    expect(busy.stderr).toMatch(/the cache layer is open read-only .*stackbd ctl warm/);
    await server.stop();
  });
});

describe('serve --record-reads, then warm --ranges', () => {
  it('records what clients read (written at the last disconnect and at shutdown), and a warm of the record fetches just that', async () => {
    const { cache, overlay } = await freshStack(url);
    const records = path.join(dir, 'records');
    const server = await spawnServer({ args: ['--export', `vm=${url},${cache},${overlay}`, '--export', `raw=${path.join(dir, 'www', 'golden.raw')}`, '--record-reads', records] });
    servers.push(server);
    const io = await runCommand('qemu-io', ['-f', 'raw', '-r', '-c', 'read 3M 64k', '-c', 'read 17408k 8k', '-c', 'read 23M 1M', server.uri('vm')]);
    expect(io.code, io.stderr).toBe(0);
    const file = path.join(records, 'vm.ranges');
    // The last (only) client is gone: the file is written (renamed into place whole).
    await expectFile(file);
    expect((await fs.readFile(file, 'utf8')).split('\n').filter((l) => !l.startsWith('#') && l !== '')).toEqual([`${3 * MiB} ${MiB}`, `${17 * MiB} ${MiB}`, `${23 * MiB} ${MiB}`]);

    // A client still connected at shutdown: its reads are written when the export closes.
    const client = await NbdClient.connect({ kind: 'tcp', host: server.host, port: server.port }, { exportName: 'raw' });
    await client.pread(5 * MiB, 4096);
    expect(await fs.stat(path.join(records, 'raw.ranges')).then(() => true, () => false)).toBe(false);
    await server.stop();
    await client.disconnect().catch(() => undefined);
    expect(await fs.readFile(path.join(records, 'raw.ranges'), 'utf8')).toMatch(new RegExp(`^${5 * MiB} ${MiB}$`, 'm'));

    const fresh = await freshStack(url, false);
    const mark = (await nginx.accessLog()).length;
    const r = JSON.parse(ok(await runStackbd(['warm', '--ranges', file, url, fresh.cache, '--json']), 'warm --ranges').stdout) as { readBytes: number };
    expect(r.readBytes).toBe(3 * MiB);
    const got = spans(await rangeGets(mark));
    expect(got.reduce((s, [a, b]) => s + b - a, 0)).toBe(3 * MiB);
    expect(got.every(([a, b]) => [3, 17, 23].some((m) => a >= m * MiB && b <= (m + 1) * MiB))).toBe(true);
  });
});

describe('stackbd ctl warm', () => {
  it('warms a served export while its clients go on, and answers with what it did', async () => {
    const base = proxy.url('golden.raw');
    const { cache, overlay } = await freshStack(base);
    const socket = path.join(dir, `admin-${n++}.sock`);
    const server = await spawnServer({ args: ['--export', `vm=${base},${cache},${overlay}`, '--admin-socket', socket, '--remote-timeout', '120'] });
    servers.push(server);
    // The origin holds every range GET until told: the warm waits on it.
    proxy.inject('hold', 1000);
    let warmDone = false;
    const warm = runStackbd(['ctl', 'warm', 'vm', '--socket', socket, '--jobs', '2']).finally(() => (warmDone = true));
    for (let i = 0; proxy.held() === 0; i++) {
      if (i > 500) throw new Error('the warm never reached the origin');
      await new Promise((r) => setTimeout(r, 20));
    }
    // Meanwhile a client writes and reads back (the overlay answers: no origin needed), where the
    // warm has not got to yet (2 jobs: it waits on the pieces at 0 and 4 MiB).
    const io = await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 17M 64k', '-c', 'read -P 0x3c 17M 64k', server.uri('vm')]);
    expect(io.code, io.stdout + io.stderr).toBe(0);
    expect(io.stdout).not.toMatch(/Pattern verification failed/);
    expect(warmDone).toBe(false);
    proxy.release();
    const r = ok(await warm, 'ctl warm');
    const result = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(result).toMatchObject({ export: 'vm', requestedBytes: 24 * MiB, readBytes: 24 * MiB - 64 * 1024, hiddenBytes: 64 * 1024, stopped: 'done' });
    expect(typeof result.seconds).toBe('number');
    // Synced when the warm ended: a second warm finds everything in place.
    const again = JSON.parse(ok(await runStackbd(['ctl', 'warm', 'vm', '--socket', socket]), 'ctl warm again').stdout) as Record<string, unknown>;
    expect(again).toMatchObject({ readBytes: 0, cachedBytes: 24 * MiB - 64 * 1024 });
    const noSuch = await runStackbd(['ctl', 'warm', 'nope', '--socket', socket]);
    expect(noSuch.code).toBe(1);
    expect(noSuch.stderr).toMatch(/server answered 404: no export named "nope"/);
    await server.stop();
    // All but what the overlay holds (64 KiB of chunk 17, a data chunk).
    expect(held(await mapOf([base, cache]), 1)).toEqual({ data: 8 * MiB - 64 * 1024, zero: 16 * MiB });
  });
});

async function expectFile(file: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await fs.stat(file).then(() => true, () => false)) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${file} was not written`);
}
