/**
 * libnbd driving the real `stackbd serve`: nbdsh one-liners (connect, opt mode, list, info)
 * and a Python script on libnbd's bindings (libnbd-driver.py) that keeps 64 aio commands in
 * flight and checks FUA writes, flush, zero with NO_HOLE / FAST_ZERO, trim, cache, DF reads,
 * block status and the server's own errors against a model, with structured replies (TCP) and
 * with simple replies (`set_request_structured_replies(False)`, unix socket). On a RAW export
 * the script also models the file's holes block by block (writes allocate, TRIM, WRITE_ZEROES
 * and FAST_ZERO punch) and checks base:allocation and the hole chunks of reads against it.
 *
 * libnbd 1.14 has no extended headers (no set_request_extended_headers): the first test checks
 * that, so this file is revisited when a newer libnbd arrives.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireTool } from '../helpers/require-tool.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { EXPORT_KINDS, prepareExport, type PreparedImage } from './export-kinds.js';
import { releaseExports } from './http-kind.js';
import {
  DEBIAN_PYTHON,
  KiB,
  MiB,
  Prng,
  debianPythonEnv,
  describeRun,
  fileSystemBlockSize,
  randomLayout,
  run,
  seedFrom,
  sha256Export,
  sha256Layout,
  startStackbd,
  type ImageLayout,
  type Stackbd,
} from './harness.js';

const DRIVER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'libnbd-driver.py');

interface DriverResult {
  seed: number;
  libnbd: string;
  size: number;
  structured: boolean;
  protocol: string;
  flags: Record<string, boolean>;
  block_size: [number, number, number];
  initial_sha256: string;
  final_sha256: string;
  aio: { rounds: number; max_in_flight: number; reads: number; writes: number; fua_writes: number };
  ops: {
    fua_writes: number;
    flush: number;
    zero: string[];
    fast_zero: { outcome: 'ok' | 'error'; errno?: number; offset: number; length: number };
    fast_zero_whole_chunks: { outcome: 'ok' | 'error'; errno?: number; offset: number; length: number };
    trim: Array<{ offset: number; length: number; fua: boolean; kept: boolean; read_chunk_kinds?: number[] }>;
    cache: number;
    df_read_chunks?: Array<[number, number, number]>;
    structured_read_chunk_kinds?: number[];
    map_checks: number;
    read_chunk_checks: number;
    block_status?: Array<{ offset: number; length: number; req_one: boolean; extents: Array<[number, number]> }>;
    errors: Record<string, number>;
    big: { trim_whole_disk: boolean; fast_zero_big: number; zero_big: number; read_over_max: number; write_over_max: number };
  };
}

/** nbdsh with Debian's python3 first in PATH. */
function nbdsh(args: string[]): ReturnType<typeof run> {
  return run('nbdsh', args, { env: debianPythonEnv(), timeoutMs: 30_000 });
}

/** Over the 32 MiB maximum payload, so whole-disk TRIM and WRITE_ZEROES exceed it. */
const SIZE = 48 * MiB;

describe.each(EXPORT_KINDS)('libnbd (nbdsh and Python bindings) against a $name export', (kind) => {
  let dir: string;
  let server: Stackbd;
  let socket: string;
  const layouts: Record<string, ImageLayout> = {};
  const images: Record<string, PreparedImage> = {};

  beforeAll(async () => {
    requireTool('nbdsh');
    requireTool('python3-libnbd');
    dir = await makeTempDir('stackbd-libnbd-');
    socket = path.join(dir, 'nbd.sock');
    const rng = new Prng(0x11b_2b0);
    for (const name of ['structured', 'simple', 'shell']) {
      layouts[name] = randomLayout(rng, SIZE, 5, 1, 900 * KiB);
      images[name] = await prepareExport(kind, dir, name, layouts[name]);
    }
    server = await startStackbd({ exports: Object.keys(images).map((name) => ({ name, paths: images[name].paths })), socket });
  });

  afterAll(async () => {
    await server?.stop();
    if (dir) {
      await releaseExports(dir);
      await removeDir(dir);
    }
  });

  it('libnbd 1.14 offers no extended headers, only structured and simple replies', async () => {
    const r = await run(DEBIAN_PYTHON, ['-c', 'import nbd; h = nbd.NBD(); print(h.get_version(), hasattr(h, "set_request_extended_headers"), hasattr(h, "set_request_structured_replies"))'], {
      env: debianPythonEnv(),
    });
    expect(r.code, describeRun(r)).toBe(0);
    const [version, extended, structured] = r.stdout.trim().split(' ');
    expect(version).toMatch(/^1\.14\./);
    expect(extended).toBe('False');
    expect(structured).toBe('True');
  });

  it('nbdsh connects and reads the known content (-u URI -c ...)', async () => {
    const region = layouts.shell.regions[2];
    const r = await nbdsh([
      '--base-allocation',
      '-u',
      server.uri('shell'),
      '-c',
      'import hashlib',
      '-c',
      'print(h.get_size(), h.get_structured_replies_negotiated(), h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION), h.can_multi_conn())',
      '-c',
      `print(hashlib.sha256(h.pread(${region.length}, ${region.offset})).hexdigest())`,
    ]);
    expect(r.code, describeRun(r)).toBe(0);
    const [line1, line2] = r.stdout.trim().split('\n');
    expect(line1).toBe(`${SIZE} True True True`);
    expect(line2).toBe(sha256Layout({ size: region.length, regions: [{ ...region, offset: 0 }] }));
  });

  it('nbdsh in opt mode lists exports and contexts, gets INFO, survives an unknown export, then GOes', async () => {
    const script = [
      'names = []',
      'h.opt_list(lambda name, desc: names.append((name, desc)) or 0)',
      'print("list", sorted(names))',
      'ctx = []',
      'h.set_export_name("shell")',
      'h.opt_list_meta_context(lambda name: ctx.append(name) or 0)',
      'print("contexts", sorted(ctx))',
      'h.set_export_name("no-such-export")',
      'try:\n  h.opt_info()\n  print("info-unknown ok")\nexcept nbd.Error as e:\n  print("info-unknown", e.errnum)',
      'h.set_export_name("shell")',
      'h.opt_info()',
      'print("info", h.get_size(), h.is_read_only())',
      'h.opt_go()',
      'print("go", h.get_size(), len(h.pread(4096, 0)))',
      'h.shutdown()',
    ];
    const r = await nbdsh(['--opt-mode', '-u', server.unixUri(''), ...script.flatMap((s) => ['-c', s])]);
    expect(r.code, describeRun(r)).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const want = Object.keys(images)
      .sort()
      .map((name) => `('${name}', '${images[name].paths.join(' <- ')}')`);
    expect(lines[0]).toBe(`list [${want.join(', ')}]`);
    expect(lines[1]).toMatch(/^contexts \[.*'base:allocation'.*\]$/);
    expect(lines[1]).toContain("'qemu:allocation-depth'");
    // ERR_UNKNOWN: libnbd reports ENOENT for an export the server does not know.
    expect(lines[2]).toBe('info-unknown 2');
    expect(lines[3]).toBe(`info ${SIZE} False`);
    expect(lines[4]).toBe(`go ${SIZE} 4096`);
  });

  const modes = [
    { mode: 'structured', transport: 'tcp' },
    { mode: 'simple', transport: 'unix' },
  ] as const;

  it.each(modes)('keeps 64 aio commands in flight and checks every command against a model ($mode replies over $transport)', async ({ mode, transport }) => {
    const seed = seedFrom('STACKBD_LIBNBD_SEED');
    const uri = transport === 'tcp' ? server.uri(mode) : server.unixUri(mode);
    // A RAW export: the script models the file's holes from the untouched layout's data blocks.
    const fileHoles = kind.fileHoles
      ? ['--fs-block', String(await fileSystemBlockSize(dir)), '--initial-data', JSON.stringify(images[mode].extents.filter((e) => e.allocation === 0).map((e) => [e.offset, e.length]))]
      : [];
    const r = await run(
      DEBIAN_PYTHON,
      [
        DRIVER,
        '--uri',
        uri,
        '--seed',
        String(seed),
        '--structured',
        mode === 'structured' ? 'yes' : 'no',
        '--fast-zero',
        kind.fastZero,
        '--trim',
        kind.trim,
        ...(kind.chunkSize ? ['--chunk-size', String(kind.chunkSize)] : []),
        ...fileHoles,
      ],
      { env: debianPythonEnv(), timeoutMs: 60_000 },
    );
    const context = `seed ${seed} (replay with STACKBD_LIBNBD_SEED=${seed})\n${describeRun(r)}`;
    expect(r.code, context).toBe(0);
    const result = JSON.parse(r.stdout) as DriverResult;

    expect(result.size, context).toBe(SIZE);
    expect(result.structured).toBe(mode === 'structured');
    expect(result.protocol).toBe('newstyle-fixed');
    expect(result.flags).toEqual({
      can_flush: true,
      can_fua: true,
      can_trim: true,
      can_zero: true,
      can_fast_zero: true,
      can_cache: true,
      can_df: mode === 'structured',
      can_multi_conn: true,
      is_read_only: false,
      base_allocation: mode === 'structured',
    });
    expect(result.block_size).toEqual([1, 4096, 32 * MiB]);
    // The export started with the reference content.
    expect(result.initial_sha256).toBe(sha256Layout(layouts[mode]));

    expect(result.aio.max_in_flight).toBe(64);
    expect(result.aio.reads).toBe(result.aio.rounds * 32);
    expect(result.aio.writes).toBe(result.aio.rounds * 32);
    expect(result.ops.zero).toEqual(['plain', 'no_hole', 'fua', 'no_hole_fua']);
    // Not whole chunks, data in the partly covered ones: RAW punches a hole (the script checked
    // the zeros and, RAW, the holes); ASIF refuses with ENOTSUP (95) and changes nothing.
    if (kind.fastZero === 'zeroes') expect(result.ops.fast_zero.outcome, context).toBe('ok');
    else expect([result.ops.fast_zero.outcome, result.ops.fast_zero.errno], context).toEqual(['error', 95]);
    // Two whole chunks: every kind zeroes them (RAW punches, ASIF marks them zero).
    expect(result.ops.fast_zero_whole_chunks.outcome, context).toBe('ok');
    // Two TRIMs of 12 KiB..2 MiB: the script checked that RAW reads exactly the trimmed range
    // as zeros, or that ASIF changed whole chunks only.
    expect(result.ops.trim).toHaveLength(2);
    expect(result.ops.errors).toEqual({ read_past_end: 22, write_past_end: 28, zero_past_end: 28, trim_past_end: 22 });
    // Whole-disk TRIM and a WRITE_ZEROES over 32 MiB succeed; READ/WRITE over 32 MiB: EINVAL.
    expect(result.ops.big.zero_big).toBeGreaterThan(32 * MiB);
    expect(result.ops.big.read_over_max).toBe(22);
    expect(result.ops.big.write_over_max).toBe(22);
    // From 1..4096 bytes in to the end, just after 4 KiB of data were written there: RAW
    // punches it; ASIF cannot zero the partly covered first chunk fast.
    expect(result.ops.big.fast_zero_big).toBe(kind.fastZero === 'zeroes' ? 0 : 95);
    // A whole-disk TRIM changes the disk on every kind: RAW zeroes it all, ASIF releases the
    // chunks its top layer holds (the aio rounds wrote into every 1/64 of the disk).
    expect(result.ops.big.trim_whole_disk).toBe(false);

    if (mode === 'structured') {
      // A DF read comes back as one OFFSET_DATA chunk (type 1) covering the request.
      expect(result.ops.df_read_chunks).toHaveLength(1);
      expect(result.ops.df_read_chunks![0][1]).toBe(200000);
      expect(result.ops.df_read_chunks![0][2]).toBe(1);
      expect(result.ops.block_status).toHaveLength(2);
      const [all, one] = result.ops.block_status!;
      expect(all.extents.reduce((n, [len]) => n + len, 0)).toBeGreaterThanOrEqual(Math.min(all.length, 1));
      expect(one.extents).toHaveLength(1);
      expect(one.extents[0][0]).toBeLessThanOrEqual(one.length);
      // RAW: every block status answer matched the modelled holes (15: the untouched disk, the
      // disk after the aio rounds, around each of the 4 zeroes, 2 FAST_ZEROes and 2 TRIMs, the
      // whole disk after the whole-disk TRIM, the big FAST_ZERO and the big requests, the two
      // above), and so did the chunks of 3 structured reads (hole chunks, status 2, where the
      // file has holes): around each TRIM and the first 8 MiB.
      if (kind.fileHoles) {
        expect(result.ops.map_checks, context).toBe(15);
        expect(result.ops.read_chunk_checks, context).toBe(3);
        // Each TRIM covers two whole blocks or more: read back, they come as hole chunks (and
        // whatever is data around them as data chunks).
        for (const t of result.ops.trim) expect(t.read_chunk_kinds, context).toContain(2);
      } else {
        expect(result.ops.map_checks).toBe(0);
        expect(result.ops.read_chunk_checks).toBe(0);
      }
    } else {
      expect(result.ops.block_status).toBeUndefined();
      expect(result.ops.map_checks).toBe(0);
      expect(result.ops.read_chunk_checks).toBe(0);
    }

    // Another client (ours) sees exactly the model the script ended with.
    const target = transport === 'tcp' ? server.tcp : { kind: 'unix' as const, path: socket };
    const seen = await sha256Export(target, mode);
    expect(seen.size).toBe(SIZE);
    expect(seen.sha256, context).toBe(result.final_sha256);
  });
});
