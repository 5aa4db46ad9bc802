/**
 * Real clients against stacks (issue 4), beyond what every suite checks on the `stack` export
 * kind:
 *
 * - A three-layer stack (a RAW or an ASIF base, an ASIF cache layer, an ASIF overlay), changed
 *   through the server by real clients (nbdsh CACHE and TRIM, qemu-io writes and write-zeroes):
 *   `nbdinfo --map` of qemu:allocation-depth, qemu:dirty-bitmap:overlay and base:allocation,
 *   `qemu-img map` (plain and through `x-dirty-bitmap`) and `stackbd map --json` all show what
 *   a model of the layers (layer-model.ts) says (the RAW base's holes are zeros at the base's
 *   depth); reading the whole export fills the cache with the data below it, never the zeros;
 *   `qemu-img convert` of the export, `stackbd convert` of the files and the model have one
 *   sha256; `qemu-img compare` finds the export equal to the flattened file; the base never
 *   changes, the cache keeps its layer UUID, `stackbd check` passes on every ASIF file. While
 *   served, the files are locked: `stackbd convert` reads them with the cache read-only (no
 *   fills behind the server's back) and a second server cannot open them.
 * - Commit: base + overlay1 + overlay2, each overlay written through the server (overlay2
 *   hides data and zeros of overlay1 and of the base); `stackbd commit` merges overlay2 into
 *   overlay1; the export of base + overlay1 then equals the flattened three-layer stack
 *   (`qemu-img compare`) and the model, and overlay2 no longer stacks on overlay1.
 * - A stack whose top is a cache layer: served read-only (writes refused by the server), and
 *   what a client reads lands in the cache (depth 2 → 1), exactly the whole sectors read that
 *   are data in the base (its holes stay at depth 2).
 * - Calibration: how qemu-img 7.2 prints a context read through `x-dirty-bitmap`, shown with
 *   qemu-nbd --allocation-depth on a qcow2 chain: what the stack tests above rely on.
 *
 * What qemu-img 7.2 prints (learned here, pinned by the calibration test):
 * - `qemu-img map --output=json nbd://...` asks for base:allocation only: `depth` is always 0
 *   (QEMU's own backing chain: there is none above the NBD node) and `present` always true;
 *   `data`/`zero` follow the HOLE/ZERO flags.
 * - QEMU's NBD client does not read qemu:allocation-depth by itself. The documented way is
 *   `--image-opts driver=nbd,...,x-dirty-bitmap=qemu:allocation-depth`, which reads that
 *   context's values as if they were base:allocation flags (bit 0 HOLE, bit 1 ZERO). Printed:
 *   depth 0 → present, data; depth 1 → not present (no data, no zero); depth 2 and depth 3 →
 *   present, zero, data. `depth` in the JSON stays 0. The same for
 *   `x-dirty-bitmap=qemu:dirty-bitmap:overlay`: dirty → not present; clean → present, data.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MapEntry } from '../../src/cli/map.js';
import { NbdClient } from '../../src/nbd/client.js';
import { runStackbd } from '../helpers/run-command.js';
import { requireTool } from '../helpers/require-tool.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { asifKind, type ExpectedExtent } from './export-kinds.js';
import { ABSENT, DATA, LayerModel, StackModel, contextRuns, mergeRuns, standaloneFromExtents } from './layer-model.js';
import {
  MiB,
  debianPythonEnv,
  describeRun,
  fileSystemBlockSize,
  layoutBuffer,
  parseNbdinfoMapJson,
  run,
  sha256Export,
  sha256File,
  startQemuNbd,
  startStackbd,
  writeRawImage,
  type ImageLayout,
  type RunResult,
  type Stackbd,
} from './harness.js';

type BaseFormat = 'raw' | 'asif';
type Runs = Array<{ offset: number; length: number; type: number }>;

function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

function expectOk(r: RunResult): void {
  expect(r.code, describeRun(r)).toBe(0);
}

/** nbdsh -u URI with one -c per statement. */
function nbdsh(uri: string, statements: string[]): Promise<RunResult> {
  return run('nbdsh', ['-u', uri, ...statements.flatMap((s) => ['-c', s])], { env: debianPythonEnv(), timeoutMs: 30_000 });
}

/** qemu-io on an export (format raw, QEMU's default writethrough: every write has FUA). */
function qemuIo(uri: string, commands: string[]): Promise<RunResult> {
  return run('qemu-io', ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), uri], { timeoutMs: 60_000 });
}

function checkQemuIo(r: RunResult): void {
  expect(r.stdout + r.stderr, describeRun(r)).not.toMatch(/failed|error/i);
  expect(r.code, describeRun(r)).toBe(0);
}

async function nbdinfoMap(uri: string, context?: string): Promise<Runs> {
  const r = await run('nbdinfo', [context ? `--map=${context}` : '--map', '--json', uri], { timeoutMs: 30_000 });
  expectOk(r);
  return mergeRuns(parseNbdinfoMapJson(r.stdout));
}

function depthRuns(extents: readonly ExpectedExtent[]): Runs {
  return contextRuns(extents, 'depth');
}

function allocationRuns(extents: readonly ExpectedExtent[]): Runs {
  return contextRuns(extents, 'allocation');
}

interface QemuImgMapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

type Shown = { start: number; length: number; present: boolean; zero: boolean; data: boolean };

/** How qemu-img 7.2 prints a value of a context read through x-dirty-bitmap (see the header). */
function shownAs(value: number): { present: boolean; zero: boolean; data: boolean } {
  if (value & 2) return { present: true, zero: true, data: true };
  if (value & 1) return { present: false, zero: false, data: false };
  return { present: true, zero: false, data: true };
}

function mergeShown(entries: readonly Shown[]): Shown[] {
  const out: Shown[] = [];
  for (const e of entries) {
    const last = out[out.length - 1];
    if (last && last.present === e.present && last.zero === e.zero && last.data === e.data && last.start + last.length === e.start) last.length += e.length;
    else out.push({ start: e.start, length: e.length, present: e.present, zero: e.zero, data: e.data });
  }
  return out;
}

function expectedShown(runs: Runs): Shown[] {
  return mergeShown(runs.map((r) => ({ start: r.offset, length: r.length, ...shownAs(r.type) })));
}

async function qemuImgMap(args: string[]): Promise<QemuImgMapEntry[]> {
  const r = await run('qemu-img', ['map', '--output=json', ...args], { timeoutMs: 60_000 });
  expectOk(r);
  return JSON.parse(r.stdout) as QemuImgMapEntry[];
}

/** qemu-img map of a context read in place of base:allocation. */
async function qemuImgMapContext(port: number, exportName: string, context: string): Promise<QemuImgMapEntry[]> {
  return qemuImgMap(['--image-opts', `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port},export=${exportName},x-dirty-bitmap=${context}`]);
}

async function stackbdMap(paths: string[]): Promise<MapEntry[]> {
  const r = await runStackbd(['map', ...paths, '--json']);
  expect(r.code, `stackbd map ${paths.join(' ')}\n${r.stderr}`).toBe(0);
  return JSON.parse(r.stdout) as MapEntry[];
}

interface StackbdInfo {
  layers: Array<{ path: string; layerUUID: string | null; parentUUID: string | null; layerType: string | null }>;
  chain: { valid: boolean; error?: string };
}

async function stackbdInfo(paths: string[]): Promise<StackbdInfo> {
  const r = await runStackbd(['info', ...paths, '--json']);
  // info describes an invalid chain too (with a non-zero exit); its JSON says why.
  expect(r.stdout, `stackbd info ${paths.join(' ')}\n${r.stderr}`).not.toBe('');
  return JSON.parse(r.stdout) as StackbdInfo;
}

async function expectChecked(file: string): Promise<void> {
  const r = await runStackbd(['check', file]);
  expect([0, 3], `stackbd check ${file} (0 clean, 3 leaks only)\n${r.stdout}${r.stderr}`).toContain(r.code);
}

async function append(paths: string[], added: string, type: 'overlay' | 'cache'): Promise<void> {
  const r = await runStackbd(['append', ...paths, '--new', added, '--type', type]);
  expect(r.code, `stackbd append ${paths.join(' ')} --new ${added}\n${r.stdout}${r.stderr}`).toBe(0);
}

/** Builds the base from `layout` and returns its file and a model of it. */
async function makeBase(format: BaseFormat, dir: string, layout: ImageLayout): Promise<{ file: string; model: LayerModel }> {
  if (format === 'raw') {
    const file = path.join(dir, 'base.raw');
    await writeRawImage(file, layout);
    return { file, model: LayerModel.raw(layout.size, await fileSystemBlockSize(dir), layout.regions) };
  }
  const prepared = await asifKind.prepare('', layout, dir, 'base');
  return { file: prepared.paths[0], model: standaloneFromExtents(layout.size, prepared.extents) };
}

/** A changing disk: its bytes and the model of its layers' maps, changed together. */
class Disk {
  readonly content: Buffer;

  constructor(
    layout: ImageLayout,
    public model: StackModel,
  ) {
    this.content = layoutBuffer(layout);
  }

  write(offset: number, length: number, pattern: number): string {
    this.content.fill(pattern, offset, offset + length);
    this.model.write(offset, length);
    return `write -P 0x${pattern.toString(16)} ${offset} ${length}`;
  }

  /** qemu-io `write -z` (NO_HOLE) or `write -z -u` (may punch holes). */
  zero(offset: number, length: number, unmap: boolean): string {
    this.content.fill(0, offset, offset + length);
    this.model.writeZeroes(offset, length, !unmap);
    return `write -z${unmap ? ' -u' : ''} ${offset} ${length}`;
  }

  /** An nbdsh statement; the bytes of the chunks the top releases become zeros. */
  trim(offset: number, length: number): string {
    for (const [a, b] of this.model.trim(offset, length)) this.content.fill(0, a, b);
    return `h.trim(${length}, ${offset})`;
  }

  /** An nbdsh statement (a prefetch of at most 4 MiB). */
  cache(offset: number, length: number): string {
    this.model.readThrough(offset, length);
    return `h.cache(${length}, ${offset})`;
  }

  get sha256(): string {
    return sha256(this.content);
  }
}

const THREE_LAYER_SIZE = 32 * MiB;

/** Base content chosen so that the cache prefetches and most overlay changes land on base data. */
const THREE_LAYER_BASE: ImageLayout = {
  size: THREE_LAYER_SIZE,
  regions: [
    { offset: 0, length: 1 * MiB + 5000, seed: 31 },
    { offset: 3 * MiB + 100, length: 5 * MiB, seed: 32 },
    { offset: 9 * MiB + 1000, length: 2 * MiB, seed: 33 },
    { offset: 14 * MiB, length: 1 * MiB, seed: 34 },
    { offset: 19 * MiB + 3, length: 3 * MiB, seed: 35 },
    { offset: 26 * MiB + 7, length: 2 * MiB, seed: 36 },
    { offset: 31 * MiB + 1537, length: 100_000, seed: 37 },
  ],
};

describe.each(['raw', 'asif'] as const)('a three-layer stack (%s base, ASIF cache, ASIF overlay) seen by real clients', (baseFormat) => {
  let dir: string;
  let paths: string[];
  let server: Stackbd;
  let disk: Disk;
  let baseSha: string;
  let cacheUUID: string | null;
  let flat: string;

  async function serve(): Promise<void> {
    server = await startStackbd({ exports: [{ name: 'stack', paths }] });
  }

  beforeAll(async () => {
    for (const tool of ['qemu-img', 'qemu-io', 'nbdinfo', 'nbdsh', 'python3-libnbd']) requireTool(tool);
    dir = await makeTempDir('stackbd-stack-');
    const base = await makeBase(baseFormat, dir, THREE_LAYER_BASE);
    baseSha = await sha256File(base.file);
    const cache = path.join(dir, 'cache.asif');
    const overlay = path.join(dir, 'overlay.asif');
    await append([base.file], cache, 'cache');
    await append([base.file, cache], overlay, 'overlay');
    paths = [base.file, cache, overlay];
    cacheUUID = (await stackbdInfo(paths)).layers[1].layerUUID;
    disk = new Disk(THREE_LAYER_BASE, new StackModel([base.model, LayerModel.layer(THREE_LAYER_SIZE), LayerModel.layer(THREE_LAYER_SIZE)], 1));
    await serve();
    const uri = server.uri('stack');
    // Prefetch into the cache (NBD_CMD_CACHE), one range whole chunks, one unaligned.
    expectOk(await nbdsh(uri, [disk.cache(4 * MiB, 3 * MiB), disk.cache(10 * MiB + 1000, 200_000)]));
    // Change the overlay: over cached data and not, unaligned, whole chunks, zeros of both kinds.
    checkQemuIo(
      await qemuIo(uri, [
        disk.write(5 * MiB + 300, 70_000, 0x5a),
        disk.write(4 * MiB + 1536, 512, 0x7c),
        disk.write(20 * MiB, 1 * MiB, 0x6b),
        disk.write(12 * MiB - 100, 200, 0x3d),
        disk.zero(24 * MiB, 2 * MiB, true),
        disk.zero(27 * MiB + 5, 3000, false),
      ]),
    );
    // Trims: a whole chunk the overlay holds (released: zeros, never the layers below), a whole
    // chunk it does not hold (nothing to release: the base shows), part of a chunk (kept).
    expectOk(await nbdsh(uri, [disk.trim(20 * MiB, 1 * MiB), disk.trim(14 * MiB, 1 * MiB), disk.trim(5 * MiB, 100_000)]));
  });

  afterAll(async () => {
    await server?.stop();
    if (dir) await removeDir(dir);
  });

  it('nbdinfo --map=qemu:allocation-depth shows the layer of every range (1 overlay, 2 cache, 3 base, 0 none)', async () => {
    const want = depthRuns(disk.model.extents());
    // The scenario reaches every layer (and, on an ASIF base, ranges no layer holds).
    const depths = new Set(want.map((r) => r.type));
    expect([...depths].sort()).toEqual(baseFormat === 'raw' ? [1, 2, 3] : [0, 1, 2, 3]);
    expect(await nbdinfoMap(server.uri('stack'), 'qemu:allocation-depth')).toEqual(want);
  });

  it('nbdinfo --map=qemu:dirty-bitmap:overlay shows exactly what the overlay holds', async () => {
    const r = await run('nbdinfo', ['--map=qemu:dirty-bitmap:overlay', '--json', server.uri('stack')], { timeoutMs: 30_000 });
    expectOk(r);
    const entries = parseNbdinfoMapJson(r.stdout);
    for (const e of entries) expect(e.description).toBe(e.type === 1 ? 'dirty' : 'clean');
    expect(mergeRuns(entries)).toEqual(disk.model.dirty());
  });

  it('nbdinfo --map and qemu-img map show base:allocation (zero chunks of the overlay, and holes everywhere, as hole+zero)', async () => {
    const want = allocationRuns(disk.model.extents());
    expect(want.some((r) => r.type === 3)).toBe(true);
    expect(await nbdinfoMap(server.uri('stack'))).toEqual(want);
    const entries = await qemuImgMap(['-f', 'raw', server.uri('stack')]);
    for (const e of entries) {
      expect(e.depth).toBe(0);
      expect(e.present).toBe(true);
    }
    const shown = mergeShown(entries.map((e) => ({ start: e.start, length: e.length, present: e.present, zero: e.zero, data: e.data })));
    expect(shown).toEqual(mergeShown(want.map((r) => ({ start: r.offset, length: r.length, present: true, zero: r.type === 3, data: r.type === 0 }))));
  });

  it('qemu-img map through x-dirty-bitmap shows the depths and the dirty bitmap the way qemu-img 7.2 prints them', async () => {
    const depth = await qemuImgMapContext(server.port, 'stack', 'qemu:allocation-depth');
    for (const e of depth) expect(e.depth).toBe(0);
    expect(mergeShown(depth)).toEqual(expectedShown(depthRuns(disk.model.extents())));
    const dirty = await qemuImgMapContext(server.port, 'stack', 'qemu:dirty-bitmap:overlay');
    expect(mergeShown(dirty)).toEqual(expectedShown(disk.model.dirty()));
  });

  it('while served, stackbd convert reads the files without filling the cache (the server holds it for writing), and a second server is refused', async () => {
    const out = path.join(dir, 'served-convert.raw');
    const cacheSha = await sha256File(paths[1]);
    const c = await runStackbd(['convert', ...paths, '-O', out]);
    expect(c.code, c.stderr).toBe(0);
    expect(await sha256File(out)).toBe(disk.sha256);
    await fs.rm(out);
    // The convert opened the cache read-only: nothing was filled behind the server's back (the
    // next test maps the files themselves, with the server stopped).
    expect(await sha256File(paths[1])).toBe(cacheSha);
    expect(await nbdinfoMap(server.uri('stack'), 'qemu:allocation-depth')).toEqual(depthRuns(disk.model.extents()));
    // A second server: the base is only read, the cache falls back to read-only like the
    // convert's, the overlay it would write is refused.
    const second = await runStackbd(['serve', '--export', `again=${paths.join(',')}`, '--listen', '127.0.0.1:0'], 20_000);
    expect(second.code, second.stderr).toBe(1);
    expect(second.stderr).toContain(`${paths[2]}: is in use`);
  });

  /** Stops the server, runs `use` on the files, serves them again (whatever `use` did). */
  async function whileStopped(use: () => Promise<void>): Promise<void> {
    expect(await server.stop()).toBe(0);
    try {
      await use();
    } finally {
      await serve();
    }
  }

  it('stackbd map --json (server stopped) agrees with what the export reported, layer by layer', async () => {
    const extents = disk.model.extents();
    await whileStopped(async () => {
      const entries = await stackbdMap(paths);
      expect(mergeRuns(entries.map((e) => ({ ...e, type: e.depth })))).toEqual(depthRuns(extents));
      expect(mergeRuns(entries.map((e) => ({ ...e, type: e.state === 'data' ? 0 : 3 })))).toEqual(allocationRuns(extents));
      for (const e of entries) {
        expect(e.file, JSON.stringify(e)).toBe(e.depth === 0 ? null : paths[paths.length - e.depth]);
        if (e.state !== 'data') expect(e.fileOffset, JSON.stringify(e)).toBeNull();
      }
      const info = await stackbdInfo(paths);
      expect(info.chain, JSON.stringify(info.chain)).toMatchObject({ valid: true });
    });
    // The same after the restart: everything the clients did was made durable.
    expect(await nbdinfoMap(server.uri('stack'), 'qemu:allocation-depth')).toEqual(depthRuns(extents));
  });

  it('reading the whole export returns the model and fills the cache with the data below it that the overlay does not hold, and nothing else', async () => {
    const seen = await sha256Export(server.tcp, 'stack');
    expect(seen.size).toBe(THREE_LAYER_SIZE);
    expect(seen.sha256).toBe(disk.sha256);
    // A FLUSH waits for the cache fills the reads started.
    const client = await NbdClient.connect(server.tcp, { exportName: 'stack' });
    await client.flush();
    await client.disconnect();
    const before = depthRuns(disk.model.extents());
    disk.model.readThrough(0, THREE_LAYER_SIZE);
    const want = disk.model.extents();
    // The read moved the base's data into the cache (3 -> 2); the zeros below the cache (the
    // base's holes or zero chunk, and on an ASIF base what it never held) were not copied: they
    // keep their depth (3, or 0), and base:allocation is what it was.
    expect(depthRuns(want)).not.toEqual(before);
    const zerosBelow = want.filter((e) => e.depth === 3 || e.depth === 0);
    expect(zerosBelow.length).toBeGreaterThan(0);
    for (const e of zerosBelow) expect(e.allocation, JSON.stringify(e)).toBe(3);
    expect(await nbdinfoMap(server.uri('stack'), 'qemu:allocation-depth')).toEqual(depthRuns(want));
    expect(await nbdinfoMap(server.uri('stack'))).toEqual(allocationRuns(want));
  });

  it('qemu-img convert of the export, stackbd convert of the files and the model have one sha256; qemu-img compare agrees', async () => {
    const converted = path.join(dir, 'qemu-img-convert.raw');
    const r = await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', server.uri('stack'), converted], { timeoutMs: 60_000 });
    expectOk(r);
    expect(await sha256File(converted)).toBe(disk.sha256);
    // stackbd convert opens the files itself (its reads may fill the cache): not while served.
    flat = path.join(dir, 'stackbd-convert.raw');
    await whileStopped(async () => {
      const c = await runStackbd(['convert', ...paths, '-O', flat]);
      expect(c.code, c.stderr).toBe(0);
      expect(await sha256File(flat)).toBe(disk.sha256);
    });
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', server.uri('stack'), flat], { timeoutMs: 60_000 });
    expectOk(cmp);
    expect(cmp.stdout.trim()).toBe('Images are identical.');
    // And it can tell a difference (one byte of the flattened file changed).
    const handle = await fs.open(flat, 'r+');
    await handle.write(Buffer.from([disk.content[21 * MiB + 7] ^ 0xff]), 0, 1, 21 * MiB + 7);
    await handle.close();
    const differs = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', server.uri('stack'), flat], { timeoutMs: 60_000 });
    expect(differs.code, describeRun(differs)).toBe(1);
    expect(differs.stdout).toContain('Content mismatch at offset');
  });

  it('leaves the base unchanged, keeps the cache layer UUID and a valid chain; every ASIF file checks clean', async () => {
    expect(await server.stop()).toBe(0);
    expect(await sha256File(paths[0])).toBe(baseSha);
    const info = await stackbdInfo(paths);
    expect(info.chain, JSON.stringify(info.chain)).toMatchObject({ valid: true });
    expect(info.layers[1].layerType).toBe('cache');
    expect(info.layers[1].layerUUID).toBe(cacheUUID);
    expect(info.layers[2].parentUUID).toBe(cacheUUID);
    for (const file of paths.filter((p) => p.endsWith('.asif'))) await expectChecked(file);
  });
});

const COMMIT_SIZE = 16 * MiB;

const COMMIT_BASE: ImageLayout = {
  size: COMMIT_SIZE,
  regions: [
    { offset: 0, length: 2 * MiB + 100, seed: 41 },
    { offset: 4 * MiB - 3000, length: 3 * MiB, seed: 42 },
    { offset: 9 * MiB + 17, length: 2 * MiB, seed: 43 },
    { offset: 12 * MiB, length: 2 * MiB, seed: 44 },
  ],
};

describe.each(['raw', 'asif'] as const)('stackbd commit of overlay2 into overlay1 (%s base), checked with qemu-img', (baseFormat) => {
  let dir: string;
  let base: string;
  let o1: string;
  let o2: string;
  let baseSha: string;
  let disk: Disk;
  let baseModel: LayerModel;
  let o1Model: LayerModel;
  let o2Model: LayerModel;
  let flat: string;
  let o1UUIDBefore: string | null;

  /** Serves `paths`, runs `use` with the server, stops it (exit 0). */
  async function served<T>(paths: string[], use: (server: Stackbd) => Promise<T>): Promise<T> {
    const server = await startStackbd({ exports: [{ name: 'c', paths }] });
    try {
      return await use(server);
    } finally {
      expect(await server.stop()).toBe(0);
    }
  }

  beforeAll(async () => {
    for (const tool of ['qemu-img', 'qemu-io', 'nbdinfo', 'nbdsh', 'python3-libnbd']) requireTool(tool);
    dir = await makeTempDir('stackbd-commit-');
    const made = await makeBase(baseFormat, dir, COMMIT_BASE);
    base = made.file;
    baseModel = made.model;
    baseSha = await sha256File(base);
    o1 = path.join(dir, 'overlay1.asif');
    o2 = path.join(dir, 'overlay2.asif');
    await append([base], o1, 'overlay');
    o1Model = LayerModel.layer(COMMIT_SIZE);
    disk = new Disk(COMMIT_BASE, new StackModel([baseModel, o1Model]));
    await served([base, o1], async (server) => {
      checkQemuIo(
        await qemuIo(server.uri('c'), [
          disk.write(1 * MiB + 100, 300_000, 0x11),
          disk.write(4 * MiB, 2 * MiB, 0x12),
          disk.zero(8 * MiB, 1 * MiB, true),
          disk.write(10 * MiB + 7, 5000, 0x13),
        ]),
      );
      expectOk(await nbdsh(server.uri('c'), [disk.trim(5 * MiB, 1 * MiB)]));
    });
    // A snapshot: overlay1 is frozen, overlay2 takes the writes.
    await append([base, o1], o2, 'overlay');
    o2Model = LayerModel.layer(COMMIT_SIZE);
    disk.model = new StackModel([baseModel, o1Model, o2Model]);
    await served([base, o1, o2], async (server) => {
      checkQemuIo(
        await qemuIo(server.uri('c'), [
          disk.write(1 * MiB + 50_000, 1000, 0x21),
          disk.zero(4 * MiB, 1 * MiB, true),
          disk.write(8 * MiB + 512, 512, 0x22),
          disk.zero(10 * MiB + 1000, 100, false),
          disk.write(12 * MiB, 1 * MiB, 0x23),
        ]),
      );
      // Release a whole chunk overlay2 holds, then write part of it: the rest of that chunk
      // must read zeros, not the base's data below.
      expectOk(await nbdsh(server.uri('c'), [disk.trim(12 * MiB, 1 * MiB)]));
      checkQemuIo(await qemuIo(server.uri('c'), [disk.write(12 * MiB + 4096, 4096, 0x24)]));
    });
    o1UUIDBefore = (await stackbdInfo([base, o1])).layers[1].layerUUID;
  });

  afterAll(async () => {
    if (dir) await removeDir(dir);
  });

  it('before the commit: the export of base + overlay1 + overlay2 has the modelled depths and content', async () => {
    await served([base, o1, o2], async (server) => {
      const depths = depthRuns(disk.model.extents());
      expect(new Set(depths.map((r) => r.type)).size).toBeGreaterThanOrEqual(3);
      expect(await nbdinfoMap(server.uri('c'), 'qemu:allocation-depth')).toEqual(depths);
      expect(await nbdinfoMap(server.uri('c'))).toEqual(allocationRuns(disk.model.extents()));
      expect((await sha256Export(server.tcp, 'c')).sha256).toBe(disk.sha256);
    });
    flat = path.join(dir, 'flat.raw');
    const c = await runStackbd(['convert', base, o1, o2, '-O', flat]);
    expect(c.code, c.stderr).toBe(0);
    expect(await sha256File(flat)).toBe(disk.sha256);
  });

  it('stackbd commit merges overlay2 into overlay1; overlay2 no longer stacks on it', async () => {
    const r = await runStackbd(['commit', base, o1, o2]);
    expect(r.code, `${r.stdout}${r.stderr}`).toBe(0);
    const after = await stackbdInfo([base, o1]);
    expect(after.chain, JSON.stringify(after.chain)).toMatchObject({ valid: true });
    // overlay1 was written: its layer UUID changed, so the old overlay2 is refused on top of it.
    expect(after.layers[1].layerUUID).not.toBe(o1UUIDBefore);
    const stale = await stackbdInfo([base, o1, o2]);
    expect(stale.chain.valid).toBe(false);
  });

  it('the export of the committed stack equals the flattened stack (qemu-img compare) and the model; overlay1 holds what both overlays held', async () => {
    // What commit does to overlay1: overlay2's data written, its zero chunks zeroed.
    const committed = o1Model.clone();
    for (const run of o2Model.runs()) {
      if (run.state === DATA) committed.write(run.offset, run.length);
      else if (run.state !== ABSENT) committed.zero(run.offset, run.length, false);
    }
    const model = new StackModel([baseModel, committed]);
    await served([base, o1], async (server) => {
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', server.uri('c'), flat], { timeoutMs: 60_000 });
      expectOk(cmp);
      expect(cmp.stdout.trim()).toBe('Images are identical.');
      const converted = path.join(dir, 'committed.raw');
      expectOk(await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', server.uri('c'), converted], { timeoutMs: 60_000 }));
      expect(await sha256File(converted)).toBe(disk.sha256);
      expect(await nbdinfoMap(server.uri('c'), 'qemu:allocation-depth')).toEqual(depthRuns(model.extents()));
      expect(await nbdinfoMap(server.uri('c'))).toEqual(allocationRuns(model.extents()));
    });
  });

  it('never changed the base; every ASIF file checks clean', async () => {
    expect(await sha256File(base)).toBe(baseSha);
    for (const file of [base, o1, o2].filter((p) => p.endsWith('.asif'))) await expectChecked(file);
  });
});

describe('a stack whose top is a cache layer (RAW base + ASIF cache), seen by real clients', () => {
  let dir: string;
  let paths: string[];
  let server: Stackbd;
  let baseSha: string;
  const layout: ImageLayout = {
    size: 8 * MiB,
    regions: [
      { offset: 0, length: 3 * MiB + 700, seed: 51 },
      { offset: 5 * MiB + 3, length: 2 * MiB, seed: 52 },
    ],
  };

  beforeAll(async () => {
    for (const tool of ['qemu-io', 'nbdinfo', 'nbdsh', 'python3-libnbd']) requireTool(tool);
    dir = await makeTempDir('stackbd-cache-top-');
    const base = path.join(dir, 'base.raw');
    await writeRawImage(base, layout);
    baseSha = await sha256File(base);
    const cache = path.join(dir, 'cache.asif');
    await append([base], cache, 'cache');
    paths = [base, cache];
    server = await startStackbd({ exports: [{ name: 'cached', paths }] });
  });

  afterAll(async () => {
    await server?.stop();
    if (dir) await removeDir(dir);
  });

  it('is served read-only, refuses writes, and reads fill the cache (depth 1 once read, 2 before)', async () => {
    expect(await nbdinfoMap(server.uri('cached'), 'qemu:allocation-depth')).toEqual([{ offset: 0, length: 8 * MiB, type: 2 }]);
    // --no-content: otherwise nbdinfo reads the first sectors to guess what the disk holds (and
    // that read would fill the cache too).
    const info = await run('nbdinfo', ['--json', '--no-content', server.uri('cached')], { timeoutMs: 20_000 });
    expectOk(info);
    const e = (JSON.parse(info.stdout) as { exports: Array<Record<string, unknown>> }).exports[0];
    expect(e).toMatchObject({ is_read_only: true, can_trim: false, can_zero: false });
    // libnbd with its own checks off: the server itself refuses (EPERM).
    const w = await nbdsh(server.uri('cached'), ['h.set_strict_mode(0)', 'try:\n  h.pwrite(b"x" * 512, 0); print("wrote")\nexcept nbd.Error as e:\n  print("refused", e.errnum)']);
    expectOk(w);
    expect(w.stdout.trim()).toBe('refused 1');
    // Read 1 MiB + 1000 bytes at an unaligned offset, from a hole of the base into its data: the
    // whole sectors read that are data in the base are cached (from the block where the data
    // starts, 5 MiB), the hole is not.
    const model = new StackModel([LayerModel.raw(8 * MiB, await fileSystemBlockSize(dir), layout.regions), LayerModel.layer(8 * MiB)], 1);
    const at = layout.regions[1].offset - 300_000;
    const r = await run('qemu-io', ['-r', '-f', 'raw', '-c', `read ${at} ${1 * MiB + 1000}`, server.uri('cached')], { timeoutMs: 30_000 });
    expectOk(r);
    model.readThrough(at, 1 * MiB + 1000);
    // A FLUSH waits for the fills the read started.
    const client = await NbdClient.connect(server.tcp, { exportName: 'cached' });
    await client.flush();
    await client.disconnect();
    const want = depthRuns(model.extents());
    expect(want.map((x) => x.type)).toEqual([2, 1, 2]);
    expect(want[1].offset).toBe(5 * MiB);
    expect(await nbdinfoMap(server.uri('cached'), 'qemu:allocation-depth')).toEqual(want);
    expect(await nbdinfoMap(server.uri('cached'))).toEqual(allocationRuns(model.extents()));
    // What was read is the base's, and the base never changed.
    expect((await sha256Export(server.tcp, 'cached')).sha256).toBe(sha256(layoutBuffer(layout)));
    expect(await sha256File(paths[0])).toBe(baseSha);
  });
});

describe('calibration: qemu-img 7.2 map of a context read through x-dirty-bitmap, from qemu-nbd --allocation-depth', () => {
  let dir: string;

  beforeAll(async () => {
    for (const tool of ['qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo']) requireTool(tool);
    dir = await makeTempDir('stackbd-calibrate-');
  });

  afterAll(async () => {
    if (dir) await removeDir(dir);
  });

  it('prints depth 0 as present data, 1 as not present, 2 and 3 as present zero data (JSON depth always 0)', async () => {
    // q3 (bottom) <- q2 <- q1 (top), 1 MiB each: depth 3, 0, 2, 0, 1 (data), 0, 1 (zeros), 0.
    const q3 = path.join(dir, 'q3.qcow2');
    const q2 = path.join(dir, 'q2.qcow2');
    const q1 = path.join(dir, 'q1.qcow2');
    expectOk(await run('qemu-img', ['create', '-q', '-f', 'qcow2', q3, '8M']));
    expectOk(await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 1M', q3]));
    expectOk(await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', q3, '-F', 'qcow2', q2]));
    expectOk(await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 2 2M 1M', q2]));
    expectOk(await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', q2, '-F', 'qcow2', q1]));
    expectOk(await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 3 4M 1M', '-c', 'write -z 6M 1M', q1]));
    const qemu = await startQemuNbd({ file: q1, format: 'qcow2', exportName: 'q', extraArgs: ['--allocation-depth', '--read-only'] });
    try {
      const uri = qemu.uri();
      const depths = [3, 0, 2, 0, 1, 0, 1, 0];
      const want: Runs = depths.map((type, i) => ({ offset: i * MiB, length: 1 * MiB, type }));
      expect(await nbdinfoMap(uri, 'qemu:allocation-depth')).toEqual(mergeRuns(want));
      if (qemu.target.kind !== 'tcp') throw new Error('qemu-nbd is not on TCP');
      const shown = await qemuImgMapContext(qemu.target.port, 'q', 'qemu:allocation-depth');
      for (const e of shown) expect(e.depth).toBe(0);
      expect(mergeShown(shown)).toEqual(expectedShown(want));
      // The literal output for the record: depth 1 is "not present", depths 2 and 3 look alike.
      expect(mergeShown(shown).map((e) => [e.start / MiB, e.length / MiB, e.present, e.zero, e.data])).toEqual([
        [0, 1, true, true, true],
        [1, 1, true, false, true],
        [2, 1, true, true, true],
        [3, 1, true, false, true],
        [4, 1, false, false, false],
        [5, 1, true, false, true],
        [6, 1, false, false, false],
        [7, 1, true, false, true],
      ]);
    } finally {
      await qemu.stop();
    }
  });
});
