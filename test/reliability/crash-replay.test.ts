/**
 * Crash-point replay through the NBD server. A stack of a RAW base, an ASIF cache and two ASIF
 * overlays is served in-process; every ASIF layer sits on a recording file (one shared order
 * across the files, helpers/recording-group.ts). A random workload runs through NbdClient:
 * aligned and unaligned writes, FUA writes, zeroes (NO_HOLE, FAST_ZERO, FUA), trims, reads
 * that fill the cache, CACHE prefetches, FLUSHes, with a short sync timer underneath. The test
 * keeps the model's state after every step and notes, in the shared order, where each FLUSH or
 * FUA reply reached the client.
 *
 * Then crashes are replayed into fresh copies of the initial files: every prefix that ends at
 * a sync or at a FLUSH/FUA reply, the whole log, and at least 1000 random prefixes (a third of
 * them with a torn last write, a third torn and with the unsynced writes landing in any
 * subset). Each crashed stack must open (chain rules included), check without errors (leaked
 * chunks are fine), and read, through the stack, in every 512-byte piece of every window the
 * workload touched, a value that piece had at some step from the last durable one (the last
 * FLUSH reply before the crash, or a later FUA reply covering the piece) up to the last step
 * that reached the files: old or new, never anything else.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkAsifFile, createAsif, openAsif, openAsifFile, type AsifImage } from '../../src/formats/asif/index.js';
import { openRaw, type RawImage } from '../../src/formats/raw.js';
import { NbdClient, NbdRequestError } from '../../src/nbd/client.js';
import { Export } from '../../src/server/export.js';
import { NbdServer } from '../../src/server/server.js';
import { checkChain, linksOf } from '../../src/stack/chain.js';
import { Stack } from '../../src/stack/stack.js';
import { DiskModel, patternBytes, readSectors, type SectorMap } from '../formats/helpers/disk-model.js';
import { MemFile, seededRandom } from '../formats/helpers/mem-file.js';
import { replay } from '../formats/helpers/recording-file.js';
import { withTimeLimit } from '../formats/helpers/time-limit.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { RecordingGroup } from './helpers/recording-group.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const UNIT = 512;
/** Small chunks: many allocations, bitmaps and tables for a small workload. */
const CHUNK = 32 * KiB;
/** One table maps 2048 chunks of 32 KiB at 512-byte blocks. */
const TABLE_SPAN = 2048 * CHUNK;
const SIZE = TABLE_SPAN + MiB;
const LAYOUT = { chunkSize: CHUNK, maxSectorCount: 2 ** 20 };
/** Byte ranges the workload touches: the start, both sides of a table boundary, the end. */
const WINDOWS: Array<[number, number]> = [
  [0, 512 * KiB],
  [TABLE_SPAN - 192 * KiB, TABLE_SPAN + 192 * KiB],
  [SIZE - 256 * KiB, SIZE],
];
const SEED = Number(process.env.STACKBD_CRASH_SEED ?? 20240611);
const STEPS = Number(process.env.STACKBD_CRASH_STEPS ?? 160);
const RANDOM_CUTS = Math.max(1000, Number(process.env.STACKBD_CRASH_RANDOM_CUTS ?? 1000));
const ERRNO_ENOTSUP = 95;

/** What a reply told the client was durable, and where in the shared order it arrived. */
type Mark = { pos: number; kind: 'flush'; snapshot: number } | { pos: number; kind: 'fua'; snapshot: number; from: number; to: number };

interface Recording {
  group: RecordingGroup;
  /** Initial bytes of each recorded file (cache, overlay 1, overlay 2). */
  initial: Buffer[];
  snaps: SectorMap[];
  marks: Mark[];
}

const FILE_NAMES = ['cache.asif', 'overlay1.asif', 'overlay2.asif'];

let dir: string;
let basePath: string;
let raw: RawImage;

async function buildStackFiles(): Promise<void> {
  basePath = path.join(dir, 'base.raw');
  const base = await fs.open(basePath, 'w');
  await base.truncate(SIZE);
  for (const [i, [ws, we]] of WINDOWS.entries()) {
    // Data in most of each window; the rest of the base reads as zeros.
    await base.write(patternBytes(we - ws - 64 * KiB, 900 + i), 0, we - ws - 64 * KiB, ws + 32 * KiB);
  }
  await base.close();
  const [cache, ov1, ov2] = FILE_NAMES.map((n) => path.join(dir, n));
  const blockCount = SIZE / UNIT;
  await createAsif(cache, { blockCount, layerType: 'cache', parentUUID: null, ...LAYOUT });
  const cacheUUID = await layerUUIDOf(cache);
  await createAsif(ov1, { blockCount, layerType: 'overlay', parentUUID: cacheUUID, ...LAYOUT });
  // The middle overlay holds data of its own (whole chunks, partial chunks, zeros), so reads
  // fall through the top, the middle, the cache and the base.
  const middle = await openAsif(ov1);
  const rnd = seededRandom(SEED + 1);
  for (const [ws, we] of WINDOWS) {
    for (let n = 0; n < 6; n++) {
      const off = ws + Math.floor(rnd() * (we - ws - 3 * CHUNK) / UNIT) * UNIT;
      const len = [UNIT, 3 * UNIT, CHUNK, 2 * CHUNK][n % 4];
      if (n === 5) await middle.zero(off, len);
      else await middle.write(patternBytes(len, 700 + n + ws), off);
    }
  }
  await middle.close();
  await createAsif(ov2, { blockCount, layerType: 'overlay', parentUUID: await layerUUIDOf(ov1), ...LAYOUT });
}

async function layerUUIDOf(file: string): Promise<string> {
  const image = await openAsif(file, { readOnly: true });
  try {
    return image.layerUUID;
  } finally {
    await image.close();
  }
}

/** The device as the stack shows it, in the windows, read without filling the cache. */
async function initialModel(): Promise<DiskModel> {
  const layers = await Promise.all(FILE_NAMES.map((n) => openAsif(path.join(dir, n), { readOnly: true })));
  const stack = new Stack([raw, ...layers], { readOnly: true });
  const model = new DiskModel({ blockSize: UNIT, chunkSize: CHUNK, layered: false }, SIZE);
  for (const [ws, we] of WINDOWS) {
    const buf = Buffer.alloc(we - ws);
    await stack.read(buf, ws);
    model.write(ws, buf);
  }
  for (const l of layers) await l.close();
  return model;
}

/** A short name for 512 bytes in failure messages. */
function digest(bytes: Buffer): string {
  return bytes.every((b) => b === 0) ? 'zeros' : `sha256:${createHash('sha256').update(bytes).digest('hex').slice(0, 12)}`;
}

type Op =
  | { kind: 'write'; off: number; data: Buffer; fua: boolean }
  | { kind: 'zero'; off: number; len: number; fua: boolean; noHole: boolean; fast: boolean }
  | { kind: 'trim'; off: number; len: number; fua: boolean }
  | { kind: 'read'; off: number; len: number }
  | { kind: 'cache'; off: number; len: number };

function opSpan(op: Op): [number, number] {
  const len = op.kind === 'write' ? op.data.length : op.len;
  return [Math.floor(op.off / UNIT), Math.ceil((op.off + len) / UNIT)];
}

/** Runs the workload through the server and records everything a replay needs. */
async function record(): Promise<Recording> {
  const logger = pino({ level: 'silent' });
  const group = new RecordingGroup();
  const initial: Buffer[] = [];
  const images: AsifImage[] = [];
  for (const [i, name] of FILE_NAMES.entries()) {
    const bytes = await fs.readFile(path.join(dir, name));
    initial.push(bytes);
    // The middle overlay is read-only in a writable stack, as DiskImage.open makes it.
    const rec = group.add(new MemFile(name, bytes, i === 1, seededRandom(SEED + 10 + i)));
    images.push(await openAsifFile(rec));
  }
  // A base of its own: closing the server closes every layer of its stack.
  const layers = [await openRaw(basePath, { readOnly: true }), ...images];
  checkChain(await linksOf(layers), true);
  const exp = new Export(new Stack(layers), { name: 'vm', syncIntervalMs: 25, logger });
  const server = new NbdServer([exp], { logger });
  const address = await server.listenTcp('127.0.0.1', 0);
  const client = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: address.port }, { exportName: 'vm', structuredReplies: true });

  const model = await initialModel();
  const snaps: SectorMap[] = [model.snapshot().sectors];
  const marks: Mark[] = [];
  const rnd = seededRandom(SEED);
  const int = (n: number): number => Math.floor(rnd() * n);
  const range = (): [number, number] => {
    const [ws, we] = WINDOWS[int(WINDOWS.length)];
    let off = ws + int(we - ws);
    if (int(3) > 0) off -= off % UNIT;
    if (int(4) === 0) off -= off % CHUNK;
    const len = [1 + int(3 * UNIT), (1 + int(12)) * UNIT, 4 * KiB, CHUNK, 2 * CHUNK + UNIT][int(5)];
    return [off, Math.max(1, Math.min(len, we - off))];
  };
  let readMismatches = 0;

  for (let step = 0; step < STEPS; step++) {
    group.setOp(step);
    const current = model.snapshot().sectors;
    if (int(8) === 0) {
      // FLUSH: everything acknowledged before it was sent is durable once it is answered.
      await client.flush();
      marks.push({ pos: group.length, kind: 'flush', snapshot: step });
      snaps.push(current);
      continue;
    }
    const ops: Op[] = [];
    const taken: Array<[number, number]> = [];
    const wanted = 1 + int(6);
    for (let tries = 0; ops.length < wanted && tries < 20; tries++) {
      const [off, len] = range();
      const choice = int(20);
      let op: Op;
      if (choice < 8) op = { kind: 'write', off, data: patternBytes(len, SEED + step * 64 + ops.length), fua: int(5) === 0 };
      else if (choice < 10) op = { kind: 'zero', off, len, fua: int(4) === 0, noHole: int(2) === 0, fast: int(3) === 0 };
      else if (choice < 12) op = { kind: 'trim', off, len, fua: int(4) === 0 };
      else if (choice < 19) op = { kind: 'read', off, len };
      else op = { kind: 'cache', off, len };
      // Requests of one step never share a sector: a crash between two writes into one sector
      // leaves a state no step describes (the format tests cover shared sectors).
      const [a, b] = opSpan(op);
      if (taken.some(([x, y]) => a < y && x < b)) continue;
      taken.push([a, b]);
      ops.push(op);
    }
    const applied = await Promise.all(
      ops.map(async (op): Promise<boolean> => {
        switch (op.kind) {
          case 'write':
            await client.pwrite(op.data, op.off, { fua: op.fua });
            if (op.fua) marks.push({ pos: group.length, kind: 'fua', snapshot: step + 1, from: opSpan(op)[0], to: opSpan(op)[1] });
            return true;
          case 'zero':
            try {
              await client.zero(op.off, op.len, { fua: op.fua, noHole: op.noHole, fast: op.fast });
            } catch (err) {
              // FAST_ZERO may be refused (unaligned, or below a RAW-like layer); nothing changed then.
              if (op.fast && err instanceof NbdRequestError && err.errno === ERRNO_ENOTSUP) return false;
              throw err;
            }
            if (op.fua) marks.push({ pos: group.length, kind: 'fua', snapshot: step + 1, from: opSpan(op)[0], to: opSpan(op)[1] });
            return true;
          case 'trim':
            await client.trim(op.off, op.len, { fua: op.fua });
            return true;
          case 'read': {
            const got = await client.pread(op.off, op.len);
            if (!got.equals(readSectors(current, UNIT, op.off, op.len))) readMismatches++;
            return true;
          }
          case 'cache':
            await client.cache(op.off, op.len);
            return true;
        }
      }),
    );
    for (const [i, op] of ops.entries()) {
      if (!applied[i]) continue;
      if (op.kind === 'write') model.write(op.off, op.data);
      else if (op.kind === 'zero') model.zero(op.off, op.len);
    }
    for (const op of ops) {
      if (op.kind !== 'trim') continue;
      // A trim releases what it likes: each piece reads as before or as zeros. Read what the
      // server chose and keep that.
      const [a, b] = opSpan(op);
      const got = await client.pread(a * UNIT, (b - a) * UNIT);
      const before = readSectors(current, UNIT, a * UNIT, (b - a) * UNIT);
      for (let s = a; s < b; s++) {
        const piece = got.subarray((s - a) * UNIT, (s - a + 1) * UNIT);
        const old = before.subarray((s - a) * UNIT, (s - a + 1) * UNIT);
        const whole = op.off <= s * UNIT && (s + 1) * UNIT <= op.off + op.len;
        if (!piece.equals(old) && !(whole && piece.every((x) => x === 0))) {
          throw new Error(`step ${step}: trim ${op.off}+${op.len} left sector ${s} neither as it was nor ${whole ? 'zeros' : '(partly trimmed, so it must stay)'}`);
        }
      }
      model.write(a * UNIT, got);
    }
    snaps.push(model.snapshot().sectors);
  }
  group.setOp(STEPS);
  await client.disconnect();
  await server.close();
  // Closing synced everything: the final state is durable.
  marks.push({ pos: group.length, kind: 'flush', snapshot: STEPS });
  expect(readMismatches, 'reads through the live server that differ from the model').toBe(0);
  return { group, initial, snaps, marks };
}

interface CrashCase {
  cut: number;
  reorder: boolean;
  tear: boolean;
  seed: number;
}

/** Replays one crash of the whole stack; resolves with a description of what is wrong, or null. */
async function verifyCrash(rec: Recording, crash: CrashCase): Promise<string | null> {
  const { group, initial, snaps, marks } = rec;
  const what = `crash at ${crash.cut}/${group.length} (torn ${crash.tear}, reordered ${crash.reorder}, seed ${crash.seed})`;
  const cuts = group.cutsAt(crash.cut);
  const random = seededRandom(crash.seed);
  const files = group.files.map((f, i) =>
    i === 1 ? new MemFile(FILE_NAMES[i], initial[i], true) : replay(initial[i], f.log, { cut: cuts[i], reorder: crash.reorder, tear: crash.tear, random }).file,
  );
  let durable = 0;
  const fua = new Map<number, number>();
  for (const m of marks) {
    if (m.pos > crash.cut) break;
    if (m.kind === 'flush') durable = Math.max(durable, m.snapshot);
    else for (let s = m.from; s < m.to; s++) fua.set(s, Math.max(fua.get(s) ?? 0, m.snapshot));
  }
  let lastStep = -1;
  group.files.forEach((f, i) => {
    for (let e = 0; e < cuts[i]; e++) {
      const entry = f.log[e];
      if (entry.kind !== 'mark') lastStep = Math.max(lastStep, entry.op);
    }
  });
  const newest = Math.min(snaps.length - 1, Math.max(durable, lastStep + 1));

  const images: AsifImage[] = [];
  try {
    for (const [i, file] of files.entries()) {
      if (i !== 1) {
        const report = await withTimeLimit(checkAsifFile(file), 10_000, `${what}: check ${FILE_NAMES[i]}`);
        if (report.errors.length > 0 || report.doubleReferenced.length > 0) {
          return `${what}: ${FILE_NAMES[i]} is corrupt: ${[...report.errors, ...report.doubleReferenced.map((c) => `chunk ${c} referenced twice`)].join('; ')}`;
        }
      }
      try {
        images.push(await withTimeLimit(openAsifFile(file), 10_000, `${what}: open ${FILE_NAMES[i]}`));
      } catch (err) {
        return `${what}: ${FILE_NAMES[i]} does not open: ${(err as Error).message}`;
      }
    }
    const layers = [raw, ...images];
    checkChain(await linksOf(layers), false);
    const stack = new Stack(layers, { readOnly: true });
    for (const [ws, we] of WINDOWS) {
      const bytes = Buffer.alloc(we - ws);
      await stack.read(bytes, ws);
      for (let u = 0; u < (we - ws) / UNIT; u++) {
        const s = ws / UNIT + u;
        const from = Math.max(durable, fua.get(s) ?? 0);
        let ok = false;
        let previous: Buffer | undefined | null = null;
        for (let k = from; k <= newest && !ok; k++) {
          const want = snaps[k].get(s);
          if (want === previous) continue;
          previous = want;
          ok = want ? want.compare(bytes, u * UNIT, (u + 1) * UNIT) === 0 : bytes.subarray(u * UNIT, (u + 1) * UNIT).every((b) => b === 0);
        }
        if (!ok) {
          const allowed = snaps.slice(from, newest + 1).map((m) => digest(m.get(s) ?? Buffer.alloc(UNIT)));
          return `${what}: bytes ${s * UNIT}..${(s + 1) * UNIT} hold ${digest(bytes.subarray(u * UNIT, (u + 1) * UNIT))}; allowed (steps ${from}..${newest}): ${[...new Set(allowed)].join(', ')}`;
        }
      }
    }
    return null;
  } catch (err) {
    return `${what}: ${(err as Error).stack ?? String(err)}`;
  } finally {
    for (const image of images) await image.close();
  }
}

describe('crash-point replay through the NBD server (RAW base, cache, two overlays)', () => {
  beforeAll(async () => {
    dir = await makeTempDir('stackbd-crash-');
    await buildStackFiles();
    raw = await openRaw(path.join(dir, 'base.raw'), { readOnly: true });
  });
  afterAll(async () => {
    await raw?.close();
    await removeDir(dir);
  });

  it('every crash opens, checks clean but for leaks, and holds every write acknowledged before the last FLUSH or FUA', async () => {
    const started = Date.now();
    const rec = await record();
    const { group, marks } = rec;
    const [cacheLog, middleLog, topLog] = group.files.map((f) => f.log);
    // The workload really exercised what the replay is about.
    expect(middleLog.length, 'the middle overlay of a writable stack is never written').toBe(0);
    expect(topLog.filter((e) => e.kind === 'sync').length).toBeGreaterThan(20);
    expect(cacheLog.filter((e) => e.kind === 'write').length, 'reads filled the cache').toBeGreaterThan(20);
    expect(marks.filter((m) => m.kind === 'flush').length).toBeGreaterThan(5);
    expect(marks.filter((m) => m.kind === 'fua').length).toBeGreaterThan(5);

    const cases: CrashCase[] = [];
    const atSync = new Set<number>();
    const seen = group.files.map(() => 0);
    group.order.forEach((file, i) => {
      if (group.files[file].log[seen[file]++].kind === 'sync') atSync.add(i + 1);
    });
    for (const m of marks) atSync.add(m.pos);
    atSync.add(group.length);
    for (const cut of [...atSync].sort((a, b) => a - b)) cases.push({ cut, reorder: false, tear: false, seed: cut });
    const prefixes = cases.length;
    const rnd = seededRandom(SEED * 31 + 7);
    for (let n = 0; n < RANDOM_CUTS; n++) {
      const mode = n % 3;
      cases.push({ cut: 1 + Math.floor(rnd() * group.length), reorder: mode === 2, tear: mode >= 1, seed: n });
    }
    const failures: string[] = [];
    for (const c of cases) {
      const problem = await verifyCrash(rec, c);
      if (problem) failures.push(problem);
    }
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    console.log(
      `crash replay: ${cases.length} crash points (${prefixes} at syncs and FLUSH/FUA replies, ${RANDOM_CUTS} random: ` +
        `${cases.filter((c) => c.tear).length} with a torn last write, ${cases.filter((c) => c.reorder).length} of those with unsynced writes reordered) ` +
        `over ${group.length} recorded entries (${topLog.length} top overlay, ${cacheLog.length} cache), ${marks.length} FLUSH/FUA replies; ` +
        `${failures.length} failures; ${seconds} s; seed ${SEED}`,
    );
    expect(prefixes).toBeGreaterThan(50);
    expect(failures.slice(0, 5)).toEqual([]);
    expect(failures.length).toBe(0);
  }, 120_000 + STEPS * RANDOM_CUTS * 0.2);
});
