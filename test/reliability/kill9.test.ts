/**
 * kill -9: the real `stackbd serve` runs a stack (RAW base + ASIF overlay made by `stackbd
 * append`); a client keeps writes, zeroes, FUA writes, reads and FLUSHes in flight; the server
 * is SIGKILLed at a random moment, `stackbd check` must find the overlay clean or with leaked
 * chunks only (exit 0 or 1), and the restarted server must serve, in every 512-byte sector,
 * the value of the last write acknowledged before the last completed FLUSH (or a FUA write), or
 * of a write sent after it: never an older value, never anything else. The next cycle goes on
 * from what the restarted server serves.
 *
 * 10 cycles in `npm test`; STACKBD_KILL_CYCLES=100 (scripts/kill-cycles.sh) runs more.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/client.js';
import { patternBytes } from '../formats/helpers/disk-model.js';
import { seededRandom } from '../formats/helpers/mem-file.js';
import { runStackbd } from '../helpers/run-command.js';
import { spawnServer, type SpawnedServer } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { signalAndWait, type Exit } from './helpers/proc.js';
import { SectorClaims } from './helpers/sector-claims.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const UNIT = 512;
const DISK = 16 * MiB;
/** The workload's part of the disk: several 1 MiB chunks of the overlay, and their edges. */
const AREA = 4 * MiB;
const SECTORS = AREA / UNIT;
const CYCLES = Number(process.env.STACKBD_KILL_CYCLES ?? 10);
const SEED = Number(process.env.STACKBD_KILL_SEED ?? Date.now() % 1_000_000);
const MAX_IN_FLIGHT = 8;

/**
 * Every value each sector has been given, in the order the writes were sent (one connection,
 * requests in flight never share a sector, so that is the order they land in); the newest
 * acknowledged value; and the newest one a FLUSH or FUA made durable.
 */
class SectorHistory {
  private readonly values: Buffer[][] = [];
  private readonly acked = new Int32Array(SECTORS);
  private readonly durable = new Int32Array(SECTORS);

  constructor(initial: Buffer) {
    for (let s = 0; s < SECTORS; s++) this.values.push([Buffer.from(initial.subarray(s * UNIT, (s + 1) * UNIT))]);
  }

  /** A write was sent: each sector it touches gets its next value. Returns [sector, index] pairs. */
  send(offset: number, data: Buffer): Array<[number, number]> {
    const touched: Array<[number, number]> = [];
    for (let s = Math.floor(offset / UNIT); s * UNIT < offset + data.length; s++) {
      const list = this.values[s];
      const next = Buffer.from(list[list.length - 1]);
      const from = Math.max(offset, s * UNIT);
      const to = Math.min(offset + data.length, (s + 1) * UNIT);
      data.copy(next, from - s * UNIT, from - offset, to - offset);
      list.push(next);
      touched.push([s, list.length - 1]);
    }
    return touched;
  }

  ack(touched: Array<[number, number]>, fua: boolean): void {
    for (const [s, i] of touched) {
      this.acked[s] = Math.max(this.acked[s], i);
      if (fua) this.durable[s] = Math.max(this.durable[s], i);
    }
  }

  /** What a FLUSH sent now will make durable when it is answered. */
  flushSent(): Int32Array {
    return this.acked.slice();
  }

  flushDone(covered: Int32Array): void {
    for (let s = 0; s < SECTORS; s++) this.durable[s] = Math.max(this.durable[s], covered[s]);
  }

  /** After a crash: is `bytes` a value sector `s` may hold? */
  allows(s: number, bytes: Buffer): boolean {
    const list = this.values[s];
    for (let i = this.durable[s]; i < list.length; i++) if (list[i].equals(bytes)) return true;
    return false;
  }

  /** Acknowledged reads must see at least what was acknowledged before they were sent. */
  readAllowed(s: number, from: number, bytes: Buffer): boolean {
    const list = this.values[s];
    for (let i = from; i < list.length; i++) if (list[i].equals(bytes)) return true;
    return false;
  }

  ackedIndex(s: number): number {
    return this.acked[s];
  }

  /** The restarted server serves this; it is the starting point of the next cycle. */
  reset(s: number, bytes: Buffer): void {
    this.values[s] = [Buffer.from(bytes)];
    this.acked[s] = 0;
    this.durable[s] = 0;
  }

  pendingWrites(s: number): number {
    return this.values[s].length - 1 - this.acked[s];
  }
}

interface CycleStats {
  acknowledgedWrites: number;
  flushes: number;
  fuaWrites: number;
  killedAfterMs: number;
}

/** Drives the workload until the server is killed; returns what was acknowledged. */
async function workload(server: SpawnedServer, history: SectorHistory, rnd: () => number, killAfterMs: number): Promise<CycleStats> {
  const int = (n: number): number => Math.floor(rnd() * n);
  const client = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'vm' });
  const stats: CycleStats = { acknowledgedWrites: 0, flushes: 0, fuaWrites: 0, killedAfterMs: killAfterMs };
  const claims = new SectorClaims(AREA);
  const inFlight = new Set<Promise<void>>();
  let dead = false;
  const killer = setTimeout(() => {
    dead = true;
    process.kill(server.pid, 'SIGKILL');
  }, killAfterMs);
  const problems: string[] = [];
  let n = 0;
  while (!dead) {
    while (inFlight.size >= MAX_IN_FLIGHT && !dead) await Promise.race(inFlight);
    if (dead) break;
    const choice = int(20);
    let job: Promise<void>;
    if (choice < 3) {
      const covered = history.flushSent();
      job = client.flush().then(() => {
        history.flushDone(covered);
        stats.flushes++;
      });
    } else {
      let off = int(AREA);
      if (int(2) === 0) off -= off % UNIT;
      if (int(6) === 0) off -= off % MiB;
      const len = Math.min(AREA - off, [1 + int(2 * UNIT), (1 + int(16)) * UNIT, 64 * KiB, MiB + UNIT][int(4)]);
      const release = claims.claim(off, len);
      if (!release) {
        await new Promise<void>((r) => setImmediate(r));
        continue;
      }
      const first = Math.floor(off / UNIT);
      const last = Math.ceil((off + len) / UNIT);
      if (choice < 16) {
        const data = choice < 14 ? patternBytes(len, SEED * 1000 + n) : Buffer.alloc(len);
        const fua = int(8) === 0;
        const touched = history.send(off, data);
        const send = choice < 14 ? client.pwrite(data, off, { fua }) : client.zero(off, len, { fua, noHole: int(2) === 0 });
        job = send.then(() => {
          history.ack(touched, fua);
          stats.acknowledgedWrites++;
          if (fua) stats.fuaWrites++;
        });
      } else {
        const from: number[] = [];
        for (let s = first; s < last; s++) from.push(history.ackedIndex(s));
        job = client.pread(first * UNIT, (last - first) * UNIT).then((got) => {
          for (let s = first; s < last; s++) {
            if (!history.readAllowed(s, from[s - first], got.subarray((s - first) * UNIT, (s - first + 1) * UNIT))) {
              problems.push(`a read of sector ${s} before the kill returned a value older than an acknowledged write`);
            }
          }
        });
      }
      job = job.finally(release);
    }
    n++;
    const tracked: Promise<void> = job.catch(() => undefined).finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
  }
  clearTimeout(killer);
  await Promise.all(inFlight);
  client.destroy();
  expect(problems).toEqual([]);
  return stats;
}

describe('kill -9 of stackbd serve', () => {
  let dir: string;
  let base: string;
  let overlay: string;

  beforeAll(async () => {
    dir = await makeTempDir('stackbd-kill-');
    base = path.join(dir, 'base.raw');
    overlay = path.join(dir, 'overlay.asif');
    const content = Buffer.alloc(DISK);
    patternBytes(DISK / 2, 77).copy(content, DISK / 4);
    await fs.writeFile(base, content);
    const made = await runStackbd(['append', base, '--new', overlay]);
    expect(made.code, made.stderr).toBe(0);
  });
  afterAll(() => removeDir(dir));

  it(`keeps every flushed write across ${CYCLES} SIGKILLs, and the overlay checks clean or with leaks only`, async () => {
    const baseHash = createHash('sha256').update(await fs.readFile(base)).digest('hex');
    const rnd = seededRandom(SEED);
    const history = new SectorHistory((await fs.readFile(base)).subarray(0, AREA));
    const totals = { cycles: 0, acknowledgedWrites: 0, flushes: 0, fuaWrites: 0, sectorsVerified: 0, losses: 0, checkLeaks: 0 };
    const lost: string[] = [];
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      const syncInterval = ['0', '0.05', '1'][Math.floor(rnd() * 3)];
      const server = await spawnServer({ args: ['--export', `vm=${base},${overlay}`, '--sync-interval', syncInterval] });
      let exit: Exit | undefined;
      try {
        // The restarted server serves what the last cycle left: check it against the history.
        const reader = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'vm' });
        const now = await reader.pread(0, AREA);
        reader.destroy();
        for (let s = 0; s < SECTORS; s++) {
          const bytes = now.subarray(s * UNIT, (s + 1) * UNIT);
          if (!history.allows(s, bytes)) {
            totals.losses++;
            if (lost.length < 5) lost.push(`cycle ${cycle}: sector ${s} (byte ${s * UNIT}) lost its flushed value (${history.pendingWrites(s)} writes unacknowledged)`);
          }
          history.reset(s, bytes);
          totals.sectorsVerified++;
        }
        const stats = await workload(server, history, rnd, 20 + Math.floor(rnd() * 500));
        totals.acknowledgedWrites += stats.acknowledgedWrites;
        totals.flushes += stats.flushes;
        totals.fuaWrites += stats.fuaWrites;
      } finally {
        exit = await signalAndWait(server.process, 'SIGKILL');
      }
      expect(exit, `cycle ${cycle}: the server died of the SIGKILL, not before it`).toEqual({ code: null, signal: 'SIGKILL' });
      const check = await runStackbd(['check', overlay]);
      expect([0, 3], `cycle ${cycle}: stackbd check ${overlay}:\n${check.stdout}${check.stderr}`).toContain(check.code);
      if (check.code === 3) totals.checkLeaks++;
      totals.cycles++;
    }
    // A last start verifies the last kill, then a clean stop must leave a synced overlay.
    const server = await spawnServer({ args: ['--export', `vm=${base},${overlay}`, '--sync-interval', '0'] });
    try {
      const reader = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'vm' });
      const now = await reader.pread(0, AREA);
      await reader.disconnect();
      for (let s = 0; s < SECTORS; s++) {
        if (!history.allows(s, now.subarray(s * UNIT, (s + 1) * UNIT))) {
          totals.losses++;
          if (lost.length < 5) lost.push(`after the last kill: sector ${s} lost its flushed value`);
        }
        totals.sectorsVerified++;
      }
    } finally {
      expect(await server.stop('SIGTERM')).toBe(0);
    }
    const check = await runStackbd(['check', overlay]);
    expect([0, 3], check.stdout + check.stderr).toContain(check.code);
    expect(createHash('sha256').update(await fs.readFile(base)).digest('hex'), 'the base never changes').toBe(baseHash);
    console.log(
      `kill -9: ${totals.cycles} cycles (seed ${SEED}), ${totals.acknowledgedWrites} acknowledged writes/zeroes (${totals.fuaWrites} FUA), ` +
        `${totals.flushes} completed flushes, ${totals.sectorsVerified} sectors verified after restarts, ${totals.losses} losses, ` +
        `check: ${totals.cycles - totals.checkLeaks} clean, ${totals.checkLeaks} leaks only, 0 corrupt`,
    );
    expect(lost).toEqual([]);
    expect(totals.losses).toBe(0);
    expect(totals.acknowledgedWrites).toBeGreaterThan(CYCLES * 5);
    expect(totals.flushes).toBeGreaterThan(CYCLES);
  }, 60_000 + CYCLES * 8_000);
});
