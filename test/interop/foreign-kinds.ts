/**
 * Export kinds whose base is a foreign image (read-only: qcow2, DMG, sparse bundle) with an
 * ASIF overlay appended on it through the library (`DiskImage.appending`, as `stackbd append`
 * does: the overlay records the base's pin). They follow the `stack` kind (export-kinds.ts):
 *
 * - the base holds the layout, except that every other region holds other bytes there and one
 *   free chunk holds junk; the overlay holds the right bytes of those regions and zeroes the
 *   junk chunk (a whole-chunk zero), so the export reads exactly as the layout, and both
 *   depths (1 = overlay, 2 = base) appear;
 * - the base's own map (data / zero / absent), from which the expected allocation follows, is
 *   qemu's for qcow2 (`qemu-img map --output=json`, and `qemu-img compare` proves the base holds
 *   what it should) and our reader's for DMG and sparse bundles (checked against 7zz, dmg2img
 *   and flat files by test/formats/dmg and test/formats/sparsebundle).
 *
 * How each base is made:
 * - `qcow2-base`: a backing file made by `qemu-img convert -c -o compression_type=zstd` (zstd
 *   compressed clusters) holding the base's content but for every fourth region (other bytes)
 *   and a junk range; the base itself, `qemu-img create -b` on it, gets those regions' right
 *   bytes from `qemu-io write -s` (partial clusters: copy-on-write from the backing file) and
 *   zero clusters over the junk (`qemu-io write -z`). Its map has data, zero and absent ranges.
 * - `dmg-base`: `stackbd convert base.raw -O base.dmg` (UDZO: zlib chunks, holes as ignore
 *   chunks, which map as zero).
 * - `sparsebundle-base`: a bundle of 1.5 MiB bands (not a divisor of the overlay's chunks)
 *   written from the base's content: bands with nothing are missing (absent), the others are
 *   stored in turn whole, cut short after their last data (a 4 KiB multiple; absent beyond) or
 *   sparse (all-zero 64 KiB pieces left as holes, which map as zero).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Run } from '../../src/block/runs.js';
import { openImage } from '../../src/formats/open-image.js';
import { DiskImage } from '../../src/stack/disk-image.js';
import { runStackbd } from '../helpers/run-command.js';
import { requireTool } from '../helpers/require-tool.js';
import { infoPlist, standardFields, writeSparse } from '../formats/sparsebundle/bundle-builder.js';
import { qemuMap } from '../formats/qcow2/qemu-oracle.js';
import type { ExportKind, PreparedImage } from './export-kinds.js';
import { describeRun, KiB, regionBytes, run, writeRawImage, type DataRegion, type ImageLayout } from './harness.js';
import { ASIF_TOP, checkAligned, completeThroughOverlay, freeChunk, otherBytes, readBackFlattened } from './kind-helpers.js';
import { CHUNK, LayerModel, StackModel } from './layer-model.js';

/** What a kind's base maker gets: the base's intended content, and where to put files. */
interface BaseInput {
  /** The content the base must read as (the layout with other bytes where the overlay fixes it). */
  content: ImageLayout;
  /** The layout's free chunk, which holds junk in `content` (the overlay zeroes it), or null. */
  free: number | null;
  dir: string;
  baseName: string;
}

interface MadeBase {
  /** The file or directory given to the stack. */
  path: string;
  /** The base's own map, over the whole disk. */
  runs: Run[];
  /** Files the base reads besides `path` (a qcow2 backing file). */
  backingFiles: string[];
}

/** Xored into a region's seed: bytes that are neither the layout's nor the base's. */
const BACKING_OTHER_BYTES = 0x0ba5_e000;

async function expectProgram(program: string, args: string[]): Promise<string> {
  const r = await run(program, args, { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`preparing a foreign base failed:\n${describeRun(r)}`);
  return r.stdout;
}

/** A foreign base of `layout` made by `makeBase`, with an overlay that completes it. */
async function prepareForeignStack(kind: string, layout: ImageLayout, dir: string, baseName: string, makeBase: (input: BaseInput) => Promise<MadeBase>): Promise<PreparedImage> {
  checkAligned(kind, layout);
  const upper = layout.regions.filter((_, i) => i % 2 === 1);
  const free = freeChunk(layout);
  const regions: DataRegion[] = layout.regions.map((r, i) => (i % 2 === 1 ? otherBytes(r) : r));
  if (free !== null) regions.push({ offset: free, length: CHUNK, seed: layout.regions.length + 1 });
  const base = await makeBase({ content: { size: layout.size, regions: sorted(regions) }, free, dir, baseName });
  const overlay = path.join(dir, `${baseName}.overlay.asif`);
  const model = new StackModel([LayerModel.base(layout.size, base.runs), LayerModel.layer(layout.size)]);
  const below = await DiskImage.open(base.path, { mode: 'readWrite' });
  let image: DiskImage;
  try {
    image = await below.appending({ path: overlay, type: 'overlay' });
  } catch (err) {
    await below.close();
    throw err;
  }
  await completeThroughOverlay(image, model, upper, free);
  return { paths: [base.path, overlay], extents: model.extents(), backingFiles: base.backingFiles };
}

function sorted(regions: DataRegion[]): DataRegion[] {
  return [...regions].sort((a, b) => a.offset - b.offset);
}

/** Our reader's map of a base, over the whole disk. */
async function readerMap(file: string): Promise<Run[]> {
  const layer = await openImage(file, { readOnly: true });
  try {
    return await layer.map(0, layer.size);
  } finally {
    await layer.close();
  }
}

/** Refuses a base whose map lacks one of `states`: the kind would not test what it says. */
function requireStates(kind: string, runs: readonly Run[], states: ReadonlyArray<Run['state']>): void {
  for (const state of states) {
    if (!runs.some((r) => r.state === state)) throw new Error(`the ${kind} base has no ${state} range: ${JSON.stringify(runs)}`);
  }
}

/** A cluster-aligned range of two clusters that no region of `content` touches, or null. */
function freeClusters(content: ImageLayout, cluster: number): { offset: number; length: number } | null {
  const length = 2 * cluster;
  for (let at = 0; at + length <= content.size; at += cluster) {
    if (!content.regions.some((r) => r.offset < at + length && r.offset + r.length > at)) return { offset: at, length };
  }
  return null;
}

const QCOW2_CLUSTER = 64 * KiB;

async function makeQcow2Base({ content, dir, baseName }: BaseInput): Promise<MadeBase> {
  requireTool('qemu-img');
  requireTool('qemu-io');
  const file = path.join(dir, `${baseName}.base.qcow2`);
  const backing = path.join(dir, `${baseName}.backing.qcow2`);
  const contentRaw = path.join(dir, `${baseName}.base-content.raw`);
  const backingRaw = path.join(dir, `${baseName}.backing-content.raw`);
  // Every fourth region is right in the base itself only; a junk range is zeroed there.
  const fixed = content.regions.filter((_, i) => i % 4 === 0);
  const zeroed = freeClusters(content, QCOW2_CLUSTER);
  const backingRegions = content.regions.map((r, i) => (i % 4 === 0 ? { ...r, seed: (r.seed ^ BACKING_OTHER_BYTES) >>> 0 } : r));
  if (zeroed) backingRegions.push({ ...zeroed, seed: 0x2e_0000 + content.regions.length });
  await writeRawImage(backingRaw, { size: content.size, regions: sorted(backingRegions) });
  await expectProgram('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-c', '-o', 'compression_type=zstd', backingRaw, backing]);
  await expectProgram('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', path.basename(backing), '-F', 'qcow2', file, String(content.size)]);
  const commands: string[] = [];
  const pieces: string[] = [];
  for (const [i, region] of fixed.entries()) {
    const piece = path.join(dir, `${baseName}.piece-${i}.bin`);
    await fs.writeFile(piece, regionBytes(region));
    pieces.push(piece);
    commands.push(`write -q -s ${piece} ${region.offset} ${region.length}`);
  }
  if (zeroed) commands.push(`write -q -z ${zeroed.offset} ${zeroed.length}`);
  if (commands.length > 0) await expectProgram('qemu-io', ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), file]);
  // qemu says what the base reads as: exactly the intended content.
  await writeRawImage(contentRaw, content);
  await expectProgram('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'qcow2', contentRaw, file]);
  const runs = await qemuMap(file);
  await Promise.all([...pieces, contentRaw, backingRaw].map((p) => fs.rm(p)));
  requireStates('qcow2', runs, zeroed ? ['data', 'zero', 'absent'] : ['data']);
  return { path: file, runs, backingFiles: [backing] };
}

async function makeDmgBase({ content, dir, baseName }: BaseInput): Promise<MadeBase> {
  const file = path.join(dir, `${baseName}.base.dmg`);
  const raw = path.join(dir, `${baseName}.base-content.raw`);
  await writeRawImage(raw, content);
  const r = await runStackbd(['convert', raw, '-O', file]);
  if (r.code !== 0) throw new Error(`stackbd convert ${raw} -O ${file} failed (exit ${r.code}):\n${r.stderr}`);
  await fs.rm(raw);
  const runs = await readerMap(file);
  requireStates('DMG', runs, ['data']);
  return { path: file, runs, backingFiles: [] };
}

/** 1.5 MiB: bands straddle the overlay's 1 MiB chunks. */
const BAND_SIZE = 3 * 512 * KiB;

/** The bytes of `content` in [offset, offset + length), or null when they are all zeros. */
function slice(content: ImageLayout, offset: number, length: number): Buffer | null {
  const out = Buffer.alloc(length);
  let any = false;
  for (const r of content.regions) {
    const from = Math.max(r.offset, offset);
    const to = Math.min(r.offset + r.length, offset + length);
    if (from >= to) continue;
    regionBytes(r).copy(out, from - offset, from - r.offset, to - r.offset);
    any = true;
  }
  return any ? out : null;
}

async function writeBand(file: string, data: Buffer, how: 'full' | 'short' | 'sparse'): Promise<void> {
  if (how === 'full') return fs.writeFile(file, data);
  let last = data.length - 1;
  while (last >= 0 && data[last] === 0) last--;
  if (how === 'short') return fs.writeFile(file, data.subarray(0, Math.min(data.length, Math.ceil((last + 1) / (4 * KiB)) * 4 * KiB)));
  return writeSparse(file, data);
}

async function makeSparseBundleBase({ content, dir, baseName }: BaseInput): Promise<MadeBase> {
  const bundle = path.join(dir, `${baseName}.base.sparsebundle`);
  await fs.mkdir(path.join(bundle, 'bands'), { recursive: true });
  const plist = infoPlist(standardFields({ bandSize: BAND_SIZE, size: content.size }));
  await fs.writeFile(path.join(bundle, 'Info.plist'), plist);
  await fs.writeFile(path.join(bundle, 'Info.bckup'), plist);
  await fs.writeFile(path.join(bundle, 'token'), '');
  const bands = new Set<number>();
  for (const r of content.regions) {
    for (let b = Math.floor(r.offset / BAND_SIZE); b * BAND_SIZE < r.offset + r.length; b++) bands.add(b);
  }
  const ways = ['full', 'short', 'sparse'] as const;
  for (const [i, band] of [...bands].sort((a, b) => a - b).entries()) {
    const data = slice(content, band * BAND_SIZE, Math.min(BAND_SIZE, content.size - band * BAND_SIZE));
    if (data) await writeBand(path.join(bundle, 'bands', band.toString(16)), data, ways[i % ways.length]);
  }
  const runs = await readerMap(bundle);
  requireStates('sparse bundle', runs, ['data', 'absent']);
  return { path: bundle, runs, backingFiles: [] };
}

function foreignKind(name: string, makeBase: (input: BaseInput) => Promise<MadeBase>): ExportKind {
  return {
    name,
    prepare: (_reference, layout, dir, baseName) => prepareForeignStack(name, layout, dir, baseName, makeBase),
    ...ASIF_TOP,
    // The differential's qemu-nbd serves a RAW copy of the content: what it compares is what
    // the clients read and write, which the overlay decides the same way on any base.
    qemuEquivalent: 'raw-copy',
    readBack: readBackFlattened,
  };
}

export const qcow2BaseKind = foreignKind('qcow2-base', makeQcow2Base);
export const dmgBaseKind = foreignKind('dmg-base', makeDmgBase);
export const sparseBundleBaseKind = foreignKind('sparsebundle-base', makeSparseBundleBase);
