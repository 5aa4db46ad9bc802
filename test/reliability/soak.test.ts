/**
 * Soak: the real `stackbd serve` with 4 exports (two RAW files, a RAW base + ASIF overlay, and
 * a RAW base + ASIF cache + ASIF overlay) and 64 connections, 16 per export, each owning its
 * own 2 MiB of its export. Every connection keeps 1 to 6 requests in flight (reads, aligned
 * and unaligned writes, zeroes, trims, cache prefetches, flushes; never two at once on one
 * sector) and checks every read against its model of its region. Connections are dropped at
 * random with requests in flight and reopened; what those requests did is unknown, so the new
 * connection first writes over it (the export orders overlapping writes by arrival, so the
 * new write lands last). A trim may keep or zero each trimmed byte; the next read settles which.
 * The server's RSS is sampled every few seconds and must stay flat after a warm-up.
 *
 * STACKBD_SOAK_SECONDS (default 60; scripts/soak.sh runs 600), STACKBD_SOAK_REPORT=FILE
 * writes the figures as JSON.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/client.js';
import { patternBytes } from '../formats/helpers/disk-model.js';
import { seededRandom } from '../formats/helpers/mem-file.js';
import { runStackbd } from '../helpers/run-command.js';
import { spawnServer, type SpawnedServer } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { rssKiB, signalAndWait } from './helpers/proc.js';
import { SectorClaims } from './helpers/sector-claims.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const UNIT = 512;
const SECONDS = Number(process.env.STACKBD_SOAK_SECONDS ?? 60);
const SEED = Number(process.env.STACKBD_SOAK_SEED ?? Date.now() % 1_000_000);
const CONNECTIONS = 64;
const EXPORTS = ['raw1', 'raw2', 'stack1', 'stack2'] as const;
const EXPORT_SIZE = 32 * MiB;
const REGION = EXPORT_SIZE / (CONNECTIONS / EXPORTS.length);
const SAMPLE_EVERY_MS = SECONDS >= 300 ? 5000 : 2000;
/** RSS samples before this are the warm-up (buffers, caches and the JIT settle). */
const WARM_UP_MS = Math.max(15_000, (SECONDS * 1000) / 4);

interface Totals {
  ops: Record<string, number>;
  bytesRead: number;
  bytesWritten: number;
  mismatches: number;
  drops: number;
  errors: number;
}

/**
 * One connection's region: the bytes it must read, and for sectors a trim or a dropped
 * connection left undecided, the values they may hold.
 */
class Region {
  readonly bytes: Buffer;
  readonly maybe = new Map<number, Buffer[]>();

  constructor(initial: Buffer) {
    this.bytes = Buffer.from(initial);
  }

  /** Compares a read of [off, off + got.length) (relative to the region); settles undecided sectors. */
  verify(off: number, got: Buffer): string | null {
    const first = Math.floor(off / UNIT);
    const last = Math.ceil((off + got.length) / UNIT);
    for (let s = first; s < last; s++) {
      const from = Math.max(off, s * UNIT);
      const to = Math.min(off + got.length, (s + 1) * UNIT);
      const piece = got.subarray(from - off, to - off);
      const options = this.maybe.get(s);
      if (options && from === s * UNIT && to === (s + 1) * UNIT) {
        if (!options.some((o) => o.equals(piece))) return `sector ${s}: none of the ${options.length} values it may hold`;
        piece.copy(this.bytes, s * UNIT);
        this.maybe.delete(s);
        continue;
      }
      if (options) continue; // part of an undecided sector: settled by a read of all of it
      if (this.bytes.compare(piece, 0, piece.length, from, to) !== 0) return `bytes ${from}..${to}`;
    }
    return null;
  }

  write(off: number, data: Buffer): void {
    data.copy(this.bytes, off);
    for (let s = Math.floor(off / UNIT); s < Math.ceil((off + data.length) / UNIT); s++) {
      if (off <= s * UNIT && (s + 1) * UNIT <= off + data.length) this.maybe.delete(s);
      else if (this.maybe.has(s)) this.maybe.set(s, this.maybe.get(s)!.map((o) => patch(o, s, off, data)));
    }
  }

  /**
   * The trimmed bytes of each sector keep their values or read as zeros: ASIF layers drop whole
   * chunks only (a partial sector keeps its bytes), a RAW file punches the exact range (a partial
   * sector's trimmed bytes become zeros, like qemu-nbd on a RAW file).
   */
  trim(off: number, len: number): void {
    for (let s = Math.floor(off / UNIT); s * UNIT < off + len; s++) {
      const old = this.maybe.get(s) ?? [Buffer.from(this.bytes.subarray(s * UNIT, (s + 1) * UNIT))];
      const zeroed = old.map((o) => zeroPart(o, s, off, len));
      this.maybe.set(s, [...old, ...zeroed.filter((z) => !old.some((o) => o.equals(z)))]);
    }
  }
}

/** Sector `s`'s value `value` after `data` was written at `off` (region-relative). */
function patch(value: Buffer, s: number, off: number, data: Buffer): Buffer {
  const out = Buffer.from(value);
  const from = Math.max(off, s * UNIT);
  const to = Math.min(off + data.length, (s + 1) * UNIT);
  data.copy(out, from - s * UNIT, from - off, to - off);
  return out;
}

/** Sector `s`'s value `value` with the bytes [off, off + len) (region-relative) zeroed. */
function zeroPart(value: Buffer, s: number, off: number, len: number): Buffer {
  return Buffer.from(value).fill(0, Math.max(off, s * UNIT) - s * UNIT, Math.min(off + len, (s + 1) * UNIT) - s * UNIT);
}

type Pending = { kind: 'write'; off: number; len: number } | { kind: 'other' };

async function worker(
  id: number,
  server: SpawnedServer,
  name: (typeof EXPORTS)[number],
  regionStart: number,
  region: Region,
  deadline: number,
  totals: Totals,
  problems: string[],
): Promise<void> {
  const rnd = seededRandom(SEED * 100 + id);
  const int = (n: number): number => Math.floor(rnd() * n);
  const connect = (): Promise<NbdClient> =>
    NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: name, structuredReplies: int(4) !== 0, extendedHeaders: int(3) === 0 });
  let client = await connect();
  const claims = new SectorClaims(REGION);
  const inFlight = new Map<Promise<void>, Pending>();
  let depth = 1 + int(6);
  let dropping = false;
  let n = 0;
  const count = (op: string): void => {
    totals.ops[op] = (totals.ops[op] ?? 0) + 1;
  };
  while (Date.now() < deadline && problems.length < 20) {
    while (inFlight.size >= depth) await Promise.race(inFlight.keys());
    n++;
    if (int(800) === 0) {
      // Drop the connection with whatever is in flight, then reconnect and overwrite what the
      // dropped requests may or may not have done.
      const unknown = [...inFlight.values()].filter((p): p is Extract<Pending, { kind: 'write' }> => p.kind === 'write');
      dropping = true;
      client.destroy();
      await Promise.allSettled(inFlight.keys());
      dropping = false;
      totals.drops++;
      client = await connect();
      for (const u of unknown) {
        const data = patternBytes(u.len, SEED + id * 1_000_003 + n);
        await client.pwrite(data, regionStart + u.off);
        region.write(u.off, data);
        count('write');
        totals.bytesWritten += u.len;
      }
      depth = 1 + int(6);
      continue;
    }
    if (int(60) === 0) {
      const job = client.flush().then(() => count('flush'));
      const tracked: Promise<void> = job
        .catch((err: unknown) => {
          if (!dropping) problems.push(`conn ${id}: flush failed: ${String(err)}`);
        })
        .finally(() => inFlight.delete(tracked));
      inFlight.set(tracked, { kind: 'other' });
      continue;
    }
    let off = int(REGION);
    if (int(2) === 0) off -= off % 4096;
    const choice = int(100);
    const len = Math.min(REGION - off, choice >= 90 && int(3) === 0 ? MiB : [1 + int(3 * UNIT), (1 + int(32)) * UNIT, 4096, 64 * KiB][int(4)]);
    if (choice >= 90 && len === MiB) off -= off % MiB;
    const release = claims.claim(off, len);
    if (!release) {
      await new Promise<void>((r) => setImmediate(r));
      continue;
    }
    let job: Promise<void>;
    let pending: Pending = { kind: 'other' };
    const at = regionStart + off;
    if (choice < 45) {
      job = client.pread(at, len).then((got) => {
        count('read');
        totals.bytesRead += len;
        const bad = region.verify(off, got);
        if (bad) {
          totals.mismatches++;
          problems.push(`conn ${id} (${name}): read ${at}+${len}: ${bad}`);
        }
      });
    } else if (choice < 80) {
      const data = patternBytes(len, SEED + id * 1_000_003 + n);
      pending = { kind: 'write', off, len };
      job = client.pwrite(data, at, { fua: int(20) === 0 }).then(() => {
        region.write(off, data);
        count('write');
        totals.bytesWritten += len;
      });
    } else if (choice < 88) {
      pending = { kind: 'write', off, len };
      job = client.zero(at, len, { noHole: int(2) === 0 }).then(() => {
        region.write(off, Buffer.alloc(len));
        count('zero');
      });
    } else if (choice < 96) {
      pending = { kind: 'write', off, len };
      job = client.trim(at, len).then(() => {
        region.trim(off, len);
        count('trim');
      });
    } else {
      job = client.cache(at, len).then(() => count('cache'));
    }
    const tracked: Promise<void> = job
      .catch((err: unknown) => {
        // Requests of a connection this worker dropped fail; anything else is an error.
        if (!dropping) {
          totals.errors++;
          problems.push(`conn ${id}: ${String(err)}`);
        }
      })
      .finally(() => {
        release();
        inFlight.delete(tracked);
      });
    inFlight.set(tracked, pending);
  }
  await Promise.all(inFlight.keys());
  // A last read of the whole region settles every trimmed sector and checks everything.
  for (let off = 0; off < REGION; off += 256 * KiB) {
    const bad = region.verify(off, await client.pread(regionStart + off, 256 * KiB));
    if (bad) {
      totals.mismatches++;
      problems.push(`conn ${id} (${name}): final read: ${bad}`);
    }
    count('read');
    totals.bytesRead += 256 * KiB;
  }
  await client.disconnect();
}

describe('soak: 64 connections over 4 exports', () => {
  let dir: string;
  let server: SpawnedServer;
  const initial = new Map<string, Buffer>();
  const overlays: string[] = [];

  beforeAll(async () => {
    dir = await makeTempDir('stackbd-soak-');
    const file = (n: string): string => path.join(dir, n);
    for (const [i, n] of ['raw1.raw', 'raw2.raw', 'base1.raw', 'base2.raw'].entries()) {
      const content = patternBytes(EXPORT_SIZE, 50 + i);
      content.fill(0, EXPORT_SIZE / 2, (EXPORT_SIZE * 3) / 4);
      await fs.writeFile(file(n), content);
      initial.set(EXPORTS[i], content);
    }
    for (const args of [
      ['append', file('base1.raw'), '--new', file('overlay1.asif')],
      ['append', file('base2.raw'), '--new', file('cache2.asif'), '--type', 'cache'],
      ['append', file('base2.raw'), file('cache2.asif'), '--new', file('overlay2.asif')],
    ]) {
      const r = await runStackbd(args);
      expect(r.code, r.stderr).toBe(0);
    }
    overlays.push(file('overlay1.asif'), file('cache2.asif'), file('overlay2.asif'));
    server = await spawnServer({
      args: [
        '--export', `raw1=${file('raw1.raw')}`,
        '--export', `raw2=${file('raw2.raw')}`,
        '--export', `stack1=${file('base1.raw')},${file('overlay1.asif')}`,
        '--export', `stack2=${file('base2.raw')},${file('cache2.asif')},${file('overlay2.asif')}`,
        '--sync-interval', '1',
      ],
      logLevel: 'info',
      // RSS is asserted: measure the process as `stackbd` starts it, with its memory flags.
      asShipped: true,
    });
  });
  afterAll(async () => {
    if (server) await signalAndWait(server.process, 'SIGKILL');
    await removeDir(dir);
  });

  it(`keeps every read equal to the model and RSS flat for ${SECONDS} s`, async () => {
    const totals: Totals = { ops: {}, bytesRead: 0, bytesWritten: 0, mismatches: 0, drops: 0, errors: 0 };
    const problems: string[] = [];
    const started = Date.now();
    const deadline = started + SECONDS * 1000;
    const samples: Array<{ s: number; rssMiB: number; ops: number }> = [];
    const totalOps = (): number => Object.values(totals.ops).reduce((a, b) => a + b, 0);
    const sample = (): void => void samples.push({ s: Math.round((Date.now() - started) / 1000), rssMiB: Math.round(rssKiB(server.pid) / 102.4) / 10, ops: totalOps() });
    sample();
    // Sampled while the load runs; the final read-back of every region is not the steady state.
    const sampler = setInterval(() => {
      if (Date.now() < deadline) sample();
      else clearInterval(sampler);
    }, SAMPLE_EVERY_MS);
    try {
      await Promise.all(
        Array.from({ length: CONNECTIONS }, (_, id) => {
          const name = EXPORTS[id % EXPORTS.length];
          const slot = Math.floor(id / EXPORTS.length);
          const start = slot * REGION;
          return worker(id, server, name, start, new Region(initial.get(name)!.subarray(start, start + REGION)), deadline, totals, problems);
        }),
      );
    } finally {
      clearInterval(sampler);
    }
    const rssAfterReadBack = Math.round(rssKiB(server.pid) / 102.4) / 10;
    const stop = Date.now();
    const exit = await signalAndWait(server.process, 'SIGTERM');
    const stopMs = Date.now() - stop;
    const checks = await Promise.all(overlays.map((o) => runStackbd(['check', o])));

    const after = samples.filter((x) => x.s * 1000 >= WARM_UP_MS);
    const half = Math.floor(after.length / 2);
    const earlyMax = Math.max(...after.slice(0, Math.max(1, half)).map((x) => x.rssMiB));
    const lateMax = Math.max(...after.slice(half).map((x) => x.rssMiB));
    const report = {
      seconds: SECONDS,
      seed: SEED,
      connections: CONNECTIONS,
      exports: EXPORTS,
      operations: totalOps(),
      byType: totals.ops,
      bytesRead: totals.bytesRead,
      bytesWritten: totals.bytesWritten,
      mismatches: totals.mismatches,
      drops: totals.drops,
      errors: totals.errors,
      rss: { warmUpSeconds: WARM_UP_MS / 1000, earlyMaxMiB: earlyMax, lateMaxMiB: lateMax, afterReadBackMiB: rssAfterReadBack, samples },
      shutdown: { exit, ms: stopMs },
      checkExitCodes: checks.map((c) => c.code),
    };
    if (process.env.STACKBD_SOAK_REPORT) await fs.writeFile(process.env.STACKBD_SOAK_REPORT, JSON.stringify(report, null, 2) + '\n');
    console.log(
      `soak: ${SECONDS} s, ${CONNECTIONS} connections, ${report.operations} operations (${Object.entries(totals.ops).map(([k, v]) => `${v} ${k}`).join(', ')}), ` +
        `${(totals.bytesRead / MiB).toFixed(0)} MiB read, ${(totals.bytesWritten / MiB).toFixed(0)} MiB written, ${totals.mismatches} mismatches, ${totals.drops} drops, ` +
        `RSS MiB ${samples.map((x) => `${x.s}s:${x.rssMiB}`).join(' ')}; after warm-up: max ${earlyMax} early, ${lateMax} late; ${rssAfterReadBack} after the read-back; seed ${SEED}`,
    );
    expect(problems.slice(0, 10)).toEqual([]);
    expect(totals.mismatches).toBe(0);
    expect(totals.drops).toBeGreaterThan(0);
    expect(report.operations).toBeGreaterThan(SECONDS * 100);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(stopMs).toBeLessThan(10_000);
    for (const [i, c] of checks.entries()) expect([0, 3], `check ${overlays[i]}: ${c.stdout}${c.stderr}`).toContain(c.code);
    // Flat: after the warm-up, the second half never goes much above the first.
    expect(after.length).toBeGreaterThanOrEqual(4);
    expect(lateMax).toBeLessThan(earlyMax * 1.15 + 24);
  }, SECONDS * 1000 + 120_000);
});
