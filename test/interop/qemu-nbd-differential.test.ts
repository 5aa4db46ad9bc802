/**
 * Differential test against the reference server: qemu-nbd serves a copy of the same disk that
 * stackbd serves, and one seeded random sequence of requests (writes aligned and not, up to
 * 256 KiB, with and without FUA; write-zeroes with and without NO_HOLE; trims; flushes; cache;
 * reads, some with DF; block status; requests past the end; zero-length requests) goes to both
 * through src/nbd/client.ts, a few requests in flight per step, over two connections per server
 * (structured replies with base:allocation, and simple replies). Every result is compared with
 * the other server's and with a model; at the end the two images are compared byte for byte.
 *
 * Per export kind (export-kinds.ts), qemu-nbd serves the same disk the way QEMU would:
 * - a single image, or a stack on a foreign base (qcow2, DMG, sparse bundle): a RAW copy of
 *   the content (`-f raw`); the stack's base (its every file: bands, backing file) must not change;
 * - a stack (RAW base + ASIF overlay): a qcow2 overlay on a copy of the same base, holding
 *   what differs from the base (`qemu-img convert -O qcow2 -B base.raw`), served with
 *   `-f qcow2`. At the end each side is flattened (`stackbd convert` of the stack,
 *   `qemu-img convert -O raw` of the qcow2) and the two are compared; neither base changed.
 *   qemu-nbd 7.2 gets the requests of a step one after another there, stackbd all at once:
 *   with several requests in flight on that qcow2 overlay (--discard=unmap, writeback cache),
 *   qemu-nbd now and then (a few runs in a hundred, on a loaded machine) read back bytes that no
 *   request had written at that place, where stackbd and the model agreed. Requests in flight
 *   together never overlap, so their order changes nothing.
 * Every ASIF file passes `stackbd check` (leaked chunks allowed) at the end.
 *
 * On a RAW export both servers do the same to the same file: TRIM and WRITE_ZEROES punch holes
 * (fallocate PUNCH_HOLE over exactly the range: qemu-nbd --discard=unmap), NO_HOLE zeroes in
 * place (ZERO_RANGE), FAST_ZERO succeeds, and base:allocation shows the file's holes. So a
 * trimmed range reads as zeros on both, FAST_ZERO requests are sent too, and both servers must
 * answer every block status request alike, block by block, except for the blocks last zeroed
 * with NO_HOLE (see UnwrittenBlocks). Requests in flight together then never share a file
 * system block either: a block's state would depend on their order.
 *
 * Legitimate differences are not compared:
 * - TRIM on a stack: stackbd releases whole ASIF chunks, qemu-nbd whole qcow2 clusters, so a
 *   trimmed range is undefined until written again and its bytes are skipped;
 * - a write past the end: stackbd answers ENOSPC as the protocol asks; qemu-nbd 7.2 answers
 *   EINVAL. Both must fail; stackbd's number is checked against the protocol;
 * - FAST_ZERO on a stack is not sent (stackbd refuses it for partial sectors and chunks that hold
 *   data; the libnbd suite covers it);
 * - block status of a stack differs by design (ASIF chunks against qcow2 clusters): each
 *   server's answer is only checked to be well-formed and true (a ZERO extent reads as zeros).
 *
 * A failure names the seed; STACKBD_DIFF_SEED=N replays it.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient, NbdRequestError, type BlockStatusExtent } from '../../src/nbd/client.js';
import { requireTool } from '../helpers/require-tool.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { runStackbd } from '../helpers/run-command.js';
import { EXPORT_KINDS, filesOf, prepareExport, type ExportKind, type PreparedExport } from './export-kinds.js';
import { releaseExports } from './http-kind.js';
import {
  DiskModel,
  KiB,
  MiB,
  Prng,
  describeRun,
  fileSystemBlockSize,
  layoutBuffer,
  randomLayout,
  run,
  seedFrom,
  sha256File,
  startQemuNbd,
  startStackbd,
  writeRawImage,
  type ImageLayout,
  type QemuNbd,
  type Stackbd,
  type Target,
} from './harness.js';

const SIZE = 24 * MiB;
/** Steps of the random sequence: full, or half for kinds with a modest budget. */
const FULL_BATCHES = 1200;
const MAX_IN_FLIGHT = 5;
const EINVAL = 22;
const ENOSPC = 28;

type Op =
  | { type: 'read'; offset: number; length: number; df: boolean }
  | { type: 'write'; offset: number; data: Buffer; fua: boolean }
  | { type: 'zero'; offset: number; length: number; noHole: boolean; fua: boolean; fast: boolean }
  | { type: 'trim'; offset: number; length: number; fua: boolean }
  | { type: 'cache'; offset: number; length: number }
  | { type: 'flush' }
  | { type: 'blockStatus'; offset: number; length: number; reqOne: boolean }
  | { type: 'pastEnd'; command: 'read' | 'write' | 'zero' | 'trim'; offset: number; length: number };

type Outcome = { ok: true; data?: Buffer; extents?: BlockStatusExtent[] } | { ok: false; errno: number; message: string };

function describeOp(op: Op): string {
  switch (op.type) {
    case 'write':
      return `write ${op.offset}+${op.data.length}${op.fua ? ' FUA' : ''}`;
    case 'zero':
      return `zero ${op.offset}+${op.length}${op.noHole ? ' NO_HOLE' : ''}${op.fast ? ' FAST_ZERO' : ''}${op.fua ? ' FUA' : ''}`;
    case 'trim':
      return `trim ${op.offset}+${op.length}${op.fua ? ' FUA' : ''}`;
    case 'read':
      return `read ${op.offset}+${op.length}${op.df ? ' DF' : ''}`;
    case 'cache':
      return `cache ${op.offset}+${op.length}`;
    case 'blockStatus':
      return `block status ${op.offset}+${op.length}${op.reqOne ? ' REQ_ONE' : ''}`;
    case 'pastEnd':
      return `${op.command} past the end ${op.offset}+${op.length}`;
    case 'flush':
      return 'flush';
  }
}

/** The bytes a request touches, widened to whole units of `unit` bytes (a file system block, on
 * a RAW export: requests sharing one must not be in flight together). */
function span(op: Op, unit: number): [number, number] | null {
  let range: [number, number];
  switch (op.type) {
    case 'write':
      range = [op.offset, op.offset + op.data.length];
      break;
    case 'read':
    case 'zero':
    case 'trim':
    case 'cache':
    case 'blockStatus':
      range = [op.offset, op.offset + op.length];
      break;
    default:
      return null;
  }
  return range[1] > range[0] ? [Math.floor(range[0] / unit) * unit, Math.ceil(range[1] / unit) * unit] : range;
}

/** Lengths: mostly small, some up to 256 KiB; half of them sector or page aligned. */
function pickRange(rng: Prng, size: number, maxLength = 256 * KiB): { offset: number; length: number } {
  const r = rng.u32() / 0x1_0000_0000;
  let length = r < 0.4 ? rng.range(1, 4096) : r < 0.7 ? rng.range(4097, 64 * KiB) : rng.range(64 * KiB + 1, maxLength);
  let offset: number;
  const where = rng.u32() / 0x1_0000_0000;
  // A hot first MiB makes requests overlap earlier ones often; some requests end at the end.
  if (where < 0.3) offset = rng.int(Math.max(1, 1 * MiB - length));
  else if (where < 0.38) offset = size - length - rng.int(Math.min(4096, size - length) + 1);
  else offset = rng.int(size - length + 1);
  if (rng.chance(0.5)) {
    const align = rng.chance(0.5) ? 512 : 4096;
    offset -= offset % align;
    length = Math.max(align, length - (length % align));
    if (offset + length > size) offset = size - length;
  }
  return { offset, length };
}

function makeOp(rng: Prng, size: number, structured: boolean, fastZero: boolean): Op {
  const r = rng.u32() / 0x1_0000_0000;
  if (r < 0.33) {
    const { offset, length } = pickRange(rng, size);
    return { type: 'write', offset, data: rng.bytes(length), fua: rng.chance(0.15) };
  }
  if (r < 0.66) {
    const { offset, length } = pickRange(rng, size);
    return { type: 'read', offset, length, df: structured && rng.chance(0.2) };
  }
  if (r < 0.78) {
    const { offset, length } = pickRange(rng, size, 1 * MiB);
    return { type: 'zero', offset, length, noHole: rng.chance(0.5), fua: rng.chance(0.15), fast: fastZero && rng.chance(0.25) };
  }
  if (r < 0.85) {
    const { offset, length } = pickRange(rng, size, 1 * MiB);
    return { type: 'trim', offset, length, fua: rng.chance(0.15) };
  }
  if (r < 0.89) return { type: 'flush' };
  if (r < 0.91) return { type: 'cache', ...pickRange(rng, size, 1 * MiB) };
  if (r < 0.95 && structured) return { type: 'blockStatus', ...pickRange(rng, size, 4 * MiB), reqOne: rng.chance(0.3) };
  if (r < 0.97) {
    const command = rng.pick(['read', 'write', 'zero', 'trim'] as const);
    const length = rng.range(1, 8192);
    const offset = size - rng.int(length);
    return { type: 'pastEnd', command, offset: rng.chance(0.1) ? size + rng.int(1 << 20) : offset, length };
  }
  // Zero-length requests: both servers answer them with success.
  const offset = rng.int(size + 1);
  return rng.pick<Op>([
    { type: 'read', offset, length: 0, df: false },
    { type: 'write', offset, data: Buffer.alloc(0), fua: false },
    { type: 'zero', offset, length: 0, noHole: false, fua: false, fast: false },
    { type: 'trim', offset, length: 0, fua: false },
  ]);
}

async function execute(client: NbdClient, op: Op): Promise<Outcome> {
  try {
    switch (op.type) {
      case 'read':
        return { ok: true, data: await client.pread(op.offset, op.length, { df: op.df }) };
      case 'write':
        await client.pwrite(op.data, op.offset, { fua: op.fua });
        return { ok: true };
      case 'zero':
        await client.zero(op.offset, op.length, { noHole: op.noHole, fua: op.fua, fast: op.fast });
        return { ok: true };
      case 'trim':
        await client.trim(op.offset, op.length, { fua: op.fua });
        return { ok: true };
      case 'cache':
        await client.cache(op.offset, op.length);
        return { ok: true };
      case 'flush':
        await client.flush();
        return { ok: true };
      case 'blockStatus': {
        const status = await client.blockStatus(op.offset, op.length, { reqOne: op.reqOne });
        return { ok: true, extents: status.get('base:allocation') };
      }
      case 'pastEnd':
        if (op.command === 'read') await client.pread(op.offset, op.length);
        else if (op.command === 'write') await client.pwrite(Buffer.alloc(op.length, 0xee), op.offset);
        else if (op.command === 'zero') await client.zero(op.offset, op.length);
        else await client.trim(op.offset, op.length);
        return { ok: true };
    }
  } catch (err) {
    if (err instanceof NbdRequestError) return { ok: false, errno: err.errno, message: err.message };
    throw err;
  }
}

/** Checks one server's block status answer: well-formed, and every ZERO extent reads as zeros
 * in the model (where the model is defined). Returns a problem or null. */
function checkExtents(op: Extract<Op, { type: 'blockStatus' }>, extents: BlockStatusExtent[] | undefined, model: DiskModel): string | null {
  if (!extents || extents.length === 0) return 'no base:allocation extents';
  if (op.reqOne && extents.length !== 1) return `REQ_ONE answered with ${extents.length} extents`;
  let at = op.offset;
  for (let i = 0; i < extents.length; i++) {
    const e = extents[i];
    if (e.length <= 0) return `extent ${i} has length ${e.length}`;
    if (at >= op.offset + op.length) return `extent ${i} starts at ${at}, past the request`;
    if (op.reqOne && at + e.length > op.offset + op.length) return `REQ_ONE extent ends past the request`;
    if (e.flags & 2) {
      const end = Math.min(at + e.length, op.offset + op.length);
      for (const [a, b] of model.definedIn(at, end - at)) {
        const nonzero = model.data.subarray(a, b).findIndex((x) => x !== 0);
        if (nonzero >= 0) return `extent ${at}+${e.length} is flagged ZERO but byte ${a + nonzero} is ${model.data[a + nonzero]}`;
      }
    }
    at += e.length;
  }
  return null;
}

/**
 * RAW: the file system blocks whose last change was a WRITE_ZEROES with NO_HOLE (fallocate
 * ZERO_RANGE over them, even partly). ext4 keeps such blocks allocated as unwritten extents,
 * which SEEK_DATA shows as holes, or as data once pages of them are in the page cache; qemu-nbd
 * reads them through the page cache (simple replies read every byte), stackbd never reads a
 * hole. There the two servers may report different base:allocation flags (both read zeros);
 * a write makes a block data on both, a punched hole makes the whole blocks inside it holes.
 */
class UnwrittenBlocks {
  private readonly blocks: Uint8Array;

  constructor(
    size: number,
    readonly unit: number,
  ) {
    this.blocks = new Uint8Array(Math.ceil(size / unit));
  }

  private mark(from: number, to: number, value: number): void {
    if (to > from) this.blocks.fill(value, from, to);
  }

  zeroedInPlace(offset: number, length: number): void {
    if (length > 0) this.mark(Math.floor(offset / this.unit), Math.ceil((offset + length) / this.unit), 1);
  }

  written(offset: number, length: number): void {
    if (length > 0) this.mark(Math.floor(offset / this.unit), Math.ceil((offset + length) / this.unit), 0);
  }

  punched(offset: number, length: number): void {
    this.mark(Math.ceil(offset / this.unit), Math.floor((offset + length) / this.unit), 0);
  }

  /** Whether every block that [from, to) touches is one of them. */
  all(from: number, to: number): boolean {
    for (let b = Math.floor(from / this.unit); b < Math.ceil(to / this.unit); b++) if (!this.blocks[b]) return false;
    return true;
  }
}

/** Two answers to one base:allocation request on the same RAW file: the same flags wherever
 * both say something, except on unwritten blocks; both cover the whole request. REQ_ONE: one
 * extent each; of the same flags, they end at the same place unless the shorter one ends at an
 * unwritten block (of different flags, the prefix they share was all unwritten). A problem or
 * null. */
function compareExtents(op: Extract<Op, { type: 'blockStatus' }>, a: BlockStatusExtent[], b: BlockStatusExtent[], unwritten: UnwrittenBlocks): string | null {
  const pieces = (extents: BlockStatusExtent[]): Array<[number, number, number]> => {
    let at = op.offset;
    return extents.map((e) => [at, (at += e.length), e.flags]);
  };
  const pa = pieces(a);
  const pb = pieces(b);
  const endA = pa.at(-1)![1];
  const endB = pb.at(-1)![1];
  if (!op.reqOne && (endA !== op.offset + op.length || endB !== op.offset + op.length)) return `the answers cover ${op.offset}..${endA} and ${op.offset}..${endB}`;
  if (op.reqOne && endA !== endB && pa[0][2] === pb[0][2] && !unwritten.all(Math.min(endA, endB), Math.min(endA, endB) + 1)) {
    return `the REQ_ONE extents end at ${endA} and ${endB}`;
  }
  const cuts = [...new Set([...pa, ...pb].flatMap(([x, y]) => [x, y]))].filter((x) => x <= Math.min(endA, endB)).sort((x, y) => x - y);
  const flagsAt = (list: Array<[number, number, number]>, at: number): number => list.find(([x, y]) => x <= at && at < y)![2];
  for (let i = 0; i + 1 < cuts.length; i++) {
    const [x, y] = [cuts[i], cuts[i + 1]];
    if (flagsAt(pa, x) !== flagsAt(pb, x) && !unwritten.all(x, y)) return `${x}..${y} is ${flagsAt(pa, x)} on stackbd, ${flagsAt(pb, x)} on qemu-nbd`;
  }
  return null;
}

interface Side {
  name: string;
  structured: NbdClient;
  simple: NbdClient;
}

async function connect(name: string, targets: { structured: Target; simple: Target }, exportName: string): Promise<Side> {
  const structured = await NbdClient.connect(targets.structured, { exportName, structuredReplies: true, metaContexts: ['base:allocation'] });
  const simple = await NbdClient.connect(targets.simple, { exportName, structuredReplies: false });
  if (structured.mode !== 'structured' || simple.mode !== 'simple') throw new Error(`${name}: reply modes ${structured.mode}/${simple.mode}`);
  if (!structured.contexts.size) throw new Error(`${name}: base:allocation was not selected`);
  return { name, structured, simple };
}

/** What qemu-nbd serves as the same disk as a stackbd export of `kind`. */
interface QemuSide {
  file: string;
  format: 'raw' | 'qcow2';
  /** The read-only base below `file`, or null. */
  base: string | null;
  /** The whole disk as one RAW buffer, once qemu-nbd has stopped. */
  flatten(): Promise<Buffer>;
}

async function prepareQemuSide(kind: ExportKind, image: PreparedExport, layout: ImageLayout, dir: string, name: string): Promise<QemuSide> {
  if (kind.qemuEquivalent === 'raw-copy') {
    const file = path.join(dir, `${name}.raw`);
    await writeRawImage(file, layout);
    return { file, format: 'raw', base: null, flatten: () => fs.readFile(file) };
  }
  requireTool('qemu-img');
  if (image.paths.length !== 2) throw new Error(`a qcow2 equivalent is made for a base and one overlay, not ${image.paths.join(', ')}`);
  const base = path.join(dir, `${name}.base.raw`);
  const file = path.join(dir, `${name}.qcow2`);
  await fs.copyFile(image.paths[0], base);
  // The overlay holds what differs from the base (-B: only differing clusters are written).
  const made = await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-B', base, '-F', 'raw', image.reference, file], { timeoutMs: 60_000 });
  if (made.code !== 0) throw new Error(`could not make the qcow2 overlay:\n${describeRun(made)}`);
  return {
    file,
    format: 'qcow2',
    base,
    flatten: async () => {
      const out = path.join(dir, `${name}.flat.raw`);
      const r = await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', file, out], { timeoutMs: 60_000 });
      if (r.code !== 0) throw new Error(`qemu-img convert of the qcow2 overlay failed:\n${describeRun(r)}`);
      const data = await fs.readFile(out);
      await fs.rm(out);
      return data;
    },
  };
}

/** The requests of one step sent to `side` one after another (each waits for the one before). */
async function inTurn(ops: ReadonlyArray<{ op: Op; structured: boolean }>, side: Side): Promise<Outcome[]> {
  const out: Outcome[] = [];
  for (const { op, structured } of ops) out.push(await execute(structured ? side.structured : side.simple, op));
  return out;
}

describe.each(EXPORT_KINDS)('differential: stackbd ($name) against qemu-nbd', (kind) => {
  const BATCHES = kind.budget === 'full' ? FULL_BATCHES : FULL_BATCHES / 2;
  /** The least count of each kind of request a run of BATCHES steps sends (about 3 a step). */
  const least = (atFullSize: number): number => (atFullSize * BATCHES) / FULL_BATCHES;
  let dir: string;
  let stackbd: Stackbd;
  let qemu: QemuNbd;
  let image: PreparedExport;
  let reference: QemuSide;
  let layout: ImageLayout;
  /** sha256 of the files that must never change (the bases of stacks), before the test. */
  const unchanged = new Map<string, string>();
  const seed = seedFrom('STACKBD_DIFF_SEED');
  /** RAW: qemu-nbd serves a RAW copy and does to its file what stackbd does to its own (trims
   * and zeroes punch, FAST_ZERO succeeds, the same holes; see the header). */
  const sameFile = kind.fileHoles && kind.qemuEquivalent === 'raw-copy';
  /** Requests in flight together never share one of these units (RAW: a file system block). */
  let unit = 1;

  beforeAll(async () => {
    requireTool('qemu-nbd');
    dir = await makeTempDir('stackbd-diff-');
    if (sameFile) unit = await fileSystemBlockSize(dir);
    layout = randomLayout(new Prng(seed ^ 0x5a5a5a5a), SIZE, 10, 1, 1 * MiB);
    image = await prepareExport(kind, dir, 'stackbd', layout);
    reference = await prepareQemuSide(kind, image, layout, dir, 'qemu');
    const bases = await filesOf({ paths: image.paths.slice(0, -1), extents: [], backingFiles: image.backingFiles, origin: image.origin });
    for (const file of [...bases, ...(reference.base ? [reference.base] : [])]) unchanged.set(file, await sha256File(file));
    stackbd = await startStackbd({ exports: [{ name: 'disk', paths: image.paths }], socket: path.join(dir, 'stackbd.sock') });
    // qemu-nbd on a unix socket: over TCP, qemu-nbd 7.2's multi-chunk structured read replies
    // meet delayed ACKs and each read takes ~10x longer, which would make this test slow.
    qemu = await startQemuNbd({
      file: reference.file,
      format: reference.format,
      exportName: 'disk',
      socket: path.join(dir, 'qemu.sock'),
      extraArgs: ['--discard=unmap', '--cache=writeback', '--shared=4'],
    });
  });

  afterAll(async () => {
    await qemu?.stop();
    await stackbd?.stop();
    if (dir) {
      await releaseExports(dir);
      await removeDir(dir);
    }
  });

  it('negotiates the same size, transmission flags and block sizes as qemu-nbd (nbdinfo, TCP on a free port)', async () => {
    requireTool('nbdinfo');
    const fields = ['export-size', 'is_rotational', 'is_read_only', 'can_cache', 'can_df', 'can_fast_zero', 'can_flush', 'can_fua', 'can_multi_conn', 'can_trim', 'can_zero'];
    const sizes = ['block_size_minimum', 'block_size_preferred', 'block_size_maximum'];
    const info = async (uri: string): Promise<Record<string, unknown>> => {
      const r = await run('nbdinfo', ['--json', uri], { timeoutMs: 20_000 });
      expect(r.code, describeRun(r)).toBe(0);
      const json = JSON.parse(r.stdout) as { structured: boolean; exports: Array<Record<string, unknown>> };
      const e = json.exports[0];
      return { structured: json.structured, contexts: e.contexts, ...Object.fromEntries([...fields, ...sizes].map((f) => [f, e[f]])) };
    };
    // Images of their own: the servers of the main test keep theirs open.
    const own = await prepareExport(kind, dir, 'flags-stackbd', layout);
    const copy = await prepareQemuSide(kind, own, layout, dir, 'flags-qemu');
    for (const readOnly of [false, true]) {
      const ref = await startQemuNbd({
        file: copy.file,
        format: copy.format,
        exportName: 'disk',
        extraArgs: ['--shared=4', '--allocation-depth', ...(readOnly ? ['--read-only'] : ['--discard=unmap'])],
      });
      const ours = await startStackbd({ exports: [{ name: 'disk', paths: own.paths }], readOnly });
      try {
        expect(ref.target.kind).toBe('tcp');
        const theirs = await info(ref.uri());
        const mine = await info(ours.uri('disk'));
        expect(theirs.is_read_only).toBe(readOnly);
        if (readOnly) {
          // The one difference: qemu-nbd offers FUA on a read-only export, stackbd does not
          // (nothing can be written, and it refuses the flag with EINVAL).
          expect(theirs.can_fua).toBe(true);
          expect(mine.can_fua).toBe(false);
          mine.can_fua = theirs.can_fua;
        }
        // qemu-nbd offers exactly these two contexts; an export may offer more (a stack's
        // dirty bitmap), never fewer.
        expect(theirs.contexts).toEqual(['base:allocation', 'qemu:allocation-depth']);
        expect(mine.contexts).toEqual(expect.arrayContaining(theirs.contexts as string[]));
        delete mine.contexts;
        delete theirs.contexts;
        expect(mine).toEqual(theirs);
      } finally {
        await ours.stop();
        await ref.stop();
      }
    }
  });

  it(`runs the same random requests on both (${BATCHES} steps of 1..${MAX_IN_FLIGHT} in flight) and gets the same answers`, async () => {
    const replay = `seed ${seed} (replay with STACKBD_DIFF_SEED=${seed})`;
    const rng = new Prng(seed);
    const model = new DiskModel(layoutBuffer(layout));
    const unwritten = new UnwrittenBlocks(SIZE, unit);
    // stackbd: structured replies over TCP, simple replies over its unix socket.
    const ours = await connect('stackbd', { structured: stackbd.tcp, simple: { kind: 'unix', path: stackbd.socket! } }, 'disk');
    const theirs = await connect('qemu-nbd', { structured: qemu.target, simple: qemu.target }, 'disk');
    for (const side of [ours, theirs]) {
      expect(side.structured.size, side.name).toBe(SIZE);
      expect(side.simple.size, side.name).toBe(SIZE);
    }
    const counts: Record<string, number> = {};
    const recent: string[] = [];
    let opIndex = 0;
    const fail = (batch: number, op: Op | null, message: string): never => {
      const where = op ? `step ${batch}, ${describeOp(op)}` : `step ${batch}`;
      const text = `${replay}: ${where}: ${message}\nlast requests:\n  ${recent.slice(-12).join('\n  ')}`;
      console.error(text);
      throw new Error(text);
    };

    for (let batch = 0; batch < BATCHES; batch++) {
      const want = rng.range(1, MAX_IN_FLIGHT);
      const ops: Array<{ op: Op; structured: boolean }> = [];
      const taken: Array<[number, number]> = [];
      for (let tries = 0; ops.length < want && tries < want * 4; tries++) {
        const structured = (batch + ops.length) % 2 === 0;
        const op = makeOp(rng, SIZE, structured, sameFile);
        const s = span(op, unit);
        // Requests in flight together never overlap: their order is not defined.
        if (s && s[1] > s[0] && taken.some(([a, b]) => s[0] < b && a < s[1])) continue;
        if (s) taken.push(s);
        ops.push({ op, structured });
      }
      const mine = Promise.all(ops.map(({ op, structured }) => execute(structured ? ours.structured : ours.simple, op)));
      const others = reference.format === 'qcow2' ? inTurn(ops, theirs) : Promise.all(ops.map(({ op, structured }) => execute(structured ? theirs.structured : theirs.simple, op)));
      const [mineDone, othersDone] = await Promise.all([mine, others]);
      const results = mineDone.map((a, i) => [a, othersDone[i]] as const);
      ops.forEach(({ op, structured }, i) => {
        recent.push(`#${opIndex++} step ${batch} ${structured ? 'structured' : 'simple'}: ${describeOp(op)}`);
        counts[op.type] = (counts[op.type] ?? 0) + 1;
        if (op.type === 'zero' && op.fast) counts.fastZero = (counts.fastZero ?? 0) + 1;
        const [a, b] = results[i];
        if (op.type === 'pastEnd') {
          if (a.ok || b.ok) fail(batch, op, `must fail on both; stackbd ${a.ok ? 'succeeded' : a.errno}, qemu-nbd ${b.ok ? 'succeeded' : b.errno}`);
          const expected = op.command === 'write' || op.command === 'zero' ? ENOSPC : EINVAL;
          if (!a.ok && a.errno !== expected) fail(batch, op, `stackbd answered errno ${a.errno} (${a.message}), the protocol asks for ${expected}`);
          return;
        }
        if (!a.ok) fail(batch, op, `stackbd failed: errno ${a.errno} ${a.message}`);
        if (!b.ok) fail(batch, op, `qemu-nbd failed: errno ${b.errno} ${b.message}`);
        if (op.type === 'read') {
          for (const [name, r] of [
            ['stackbd', a],
            ['qemu-nbd', b],
          ] as const) {
            const data = r.ok ? r.data! : Buffer.alloc(0);
            if (data.length !== op.length) fail(batch, op, `${name} returned ${data.length} bytes`);
            const at = model.firstMismatch(op.offset, data);
            if (at >= 0) {
              const other = name === 'stackbd' ? b : a;
              const otherAgrees = other.ok && other.data ? model.firstMismatch(op.offset, other.data) < 0 : false;
              fail(batch, op, `${name} read differs from the model${otherAgrees ? ' (the other server agrees with the model)' : ''}: ${model.describeMismatch(op.offset, data, at)}`);
            }
          }
        }
        if (op.type === 'blockStatus') {
          const problemA = checkExtents(op, a.ok ? a.extents : undefined, model);
          if (problemA) fail(batch, op, `stackbd block status: ${problemA}: ${JSON.stringify(a.ok ? a.extents : a)}`);
          const problemB = checkExtents(op, b.ok ? b.extents : undefined, model);
          if (problemB) fail(batch, op, `qemu-nbd block status: ${problemB}: ${JSON.stringify(b.ok ? b.extents : b)}`);
          // The same file, changed the same way: the same holes, reported alike.
          const differs = sameFile && a.ok && b.ok ? compareExtents(op, a.extents!, b.extents!, unwritten) : null;
          if (differs) fail(batch, op, `base:allocation differs (${differs}): stackbd ${JSON.stringify(a.ok ? a.extents : a)}, qemu-nbd ${JSON.stringify(b.ok ? b.extents : b)}`);
        }
      });
      // Both servers answered every request of the step: the model moves on.
      for (const { op } of ops) {
        if (op.type === 'write') {
          model.write(op.offset, op.data);
          unwritten.written(op.offset, op.data.length);
        } else if (op.type === 'zero') {
          model.zero(op.offset, op.length);
          if (op.noHole) unwritten.zeroedInPlace(op.offset, op.length);
          else unwritten.punched(op.offset, op.length);
        } else if (op.type === 'trim' && sameFile) {
          model.zero(op.offset, op.length);
          unwritten.punched(op.offset, op.length);
        } else if (op.type === 'trim') {
          model.trim(op.offset, op.length);
        }
      }
    }

    const total = Object.values(counts).reduce((a, b) => a + b, 0) - (counts.fastZero ?? 0);
    expect(total, replay).toBeGreaterThanOrEqual(least(2000));
    expect(counts.write, replay).toBeGreaterThan(least(500));
    expect(counts.read, replay).toBeGreaterThan(least(500));
    expect(counts.zero, replay).toBeGreaterThan(least(150));
    expect(counts.trim, replay).toBeGreaterThan(least(80));
    expect(counts.flush, replay).toBeGreaterThan(least(40));
    expect(counts.blockStatus, replay).toBeGreaterThan(least(20));
    expect(counts.pastEnd, replay).toBeGreaterThan(least(20));
    if (sameFile) expect(counts.fastZero, replay).toBeGreaterThan(least(40));
    else expect(counts.fastZero, replay).toBeUndefined();

    if (sameFile) {
      // The whole disk's holes, as each server reports them: the same.
      const whole = { type: 'blockStatus' as const, offset: 0, length: SIZE, reqOne: false };
      const [mineMap, theirsMap] = await Promise.all([ours, theirs].map((side) => side.structured.blockStatus(0, SIZE)));
      const mineExtents = mineMap.get('base:allocation')!;
      expect(checkExtents(whole, mineExtents, model), replay).toBeNull();
      expect(compareExtents(whole, mineExtents, theirsMap.get('base:allocation')!, unwritten), replay).toBeNull();
      expect(new Set(mineExtents.map((e) => e.flags)), replay).toEqual(new Set([0, 3]));
    }

    // Whole disk through both servers, then the files themselves.
    for (const side of [ours, theirs]) {
      await side.structured.flush();
      for (let offset = 0; offset < SIZE; offset += 4 * MiB) {
        const got = await side.simple.pread(offset, 4 * MiB);
        const at = model.firstMismatch(offset, got);
        if (at >= 0) fail(BATCHES, null, `${side.name} final read differs from the model: ${model.describeMismatch(offset, got, at)}`);
      }
      await Promise.all([side.structured.disconnect(), side.simple.disconnect()]);
    }
    expect(await qemu.stop(), `qemu-nbd exit status\n${qemu.stderr()}`).toBe(0);
    expect(await stackbd.stop(), `stackbd exit status\n${stackbd.logs()}`).toBe(0);
    const mine = await kind.readBack(image, SIZE);
    const theirsFlat = await reference.flatten();
    expect(theirsFlat.length).toBe(SIZE);
    let compared = 0;
    for (const [a, b] of model.definedIn(0, SIZE)) {
      compared += b - a;
      if (!mine.subarray(a, b).equals(theirsFlat.subarray(a, b))) {
        let i = a;
        while (mine[i] === theirsFlat[i]) i++;
        fail(BATCHES, null, `the images differ at byte ${i}: stackbd ${mine.subarray(i, i + 8).toString('hex')}, qemu-nbd ${theirsFlat.subarray(i, i + 8).toString('hex')}`);
      }
    }
    const at = model.firstMismatch(0, mine);
    if (at >= 0) fail(BATCHES, null, `stackbd's image file differs from the model: ${model.describeMismatch(0, mine, at)}`);
    expect(compared + model.undefinedBytes, replay).toBe(SIZE);
    // RAW: every byte is compared (trimmed ranges read as zeros on both). A stack: most of the
    // disk, its trims leave only part of it undefined.
    if (sameFile) expect(compared, replay).toBe(SIZE);
    else expect(compared, replay).toBeGreaterThan(SIZE / 2);
    // Bases are read-only: not one byte changed, on either side.
    for (const [file, sha] of unchanged) expect(await sha256File(file), `${file} changed`).toBe(sha);
    // Every ASIF file is consistent (leaked chunks, exit 3, are allowed).
    for (const file of image.paths.filter((p) => p.endsWith('.asif'))) {
      const check = await runStackbd(['check', file]);
      expect([0, 3], `stackbd check ${file}\n${check.stdout}${check.stderr}`).toContain(check.code);
    }
  });
});
