/**
 * `stackbd serve --read-only` seen by the real clients: nbdinfo reports it read-only without
 * write flags; qemu-io, qemu-img convert -n and nbdcopy refuse to write; libnbd with its own
 * checks turned off gets EPERM from the server for every write command; reads still work; the
 * image files keep their sha256 and the server holds them open read-only.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireTool } from '../helpers/require-tool.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { EXPORT_KINDS, filesOf, prepareExport, type PreparedExport } from './export-kinds.js';
import { releaseExports } from './http-kind.js';
import {
  KiB,
  MiB,
  Prng,
  debianPythonEnv,
  describeRun,
  randomLayout,
  run,
  sha256Export,
  sha256File,
  startStackbd,
  writeRawImage,
  type ImageLayout,
  type Stackbd,
} from './harness.js';

describe.each(EXPORT_KINDS)('a read-only $name export', (kind) => {
  let dir: string;
  let server: Stackbd;
  let layout: ImageLayout;
  let image: PreparedExport;
  let reference: string;
  let other: string;
  /** Every file the export reads (a sparse bundle's bands, a qcow2 base's backing file too). */
  let files: string[];
  const before = new Map<string, string>();

  beforeAll(async () => {
    requireTool('nbdinfo');
    requireTool('qemu-io');
    requireTool('qemu-img');
    requireTool('nbdcopy');
    requireTool('nbdsh');
    requireTool('python3-libnbd');
    dir = await makeTempDir('stackbd-ro-');
    const rng = new Prng(0x70);
    layout = randomLayout(rng, 32 * MiB, 6, 1, 600 * KiB);
    image = await prepareExport(kind, dir, 'ro', layout);
    reference = image.reference;
    other = path.join(dir, 'other.raw');
    await writeRawImage(other, randomLayout(rng, 32 * MiB, 6, 1, 600 * KiB));
    files = await filesOf(image);
    for (const p of files) before.set(p, await sha256File(p));
    server = await startStackbd({ exports: [{ name: 'ro', paths: image.paths }], readOnly: true });
  });

  afterAll(async () => {
    await server?.stop();
    if (dir) {
      await releaseExports(dir);
      await removeDir(dir);
    }
  });

  it('nbdinfo says read-only and offers no write flags', async () => {
    const r = await run('nbdinfo', ['--json', server.uri('ro')], { timeoutMs: 20_000 });
    expect(r.code, describeRun(r)).toBe(0);
    const e = (JSON.parse(r.stdout) as { exports: Array<Record<string, unknown>> }).exports[0];
    expect(e).toMatchObject({
      'export-size': layout.size,
      is_read_only: true,
      can_trim: false,
      can_zero: false,
      can_fast_zero: false,
      can_fua: false,
      can_flush: true,
      can_cache: true,
      can_df: true,
      can_multi_conn: true,
    });
    const is = await run('nbdinfo', ['--is', 'read-only', server.uri('ro')]);
    expect(is.code, describeRun(is)).toBe(0);
    const can = await run('nbdinfo', ['--can', 'write', server.uri('ro')]);
    expect(can.code, describeRun(can)).toBe(2);
  });

  it('qemu-io cannot open it for writing, but reads it with -r', async () => {
    const w = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x55 0 4096', server.uri('ro')], { timeoutMs: 30_000 });
    expect(w.code, describeRun(w)).not.toBe(0);
    expect(w.stdout).not.toContain('wrote');
    expect(w.stderr).toContain('Permission denied');
    const region = layout.regions[1];
    const r = await run('qemu-io', ['-r', '-f', 'raw', '-c', `read ${region.offset} ${region.length}`, server.uri('ro')], { timeoutMs: 30_000 });
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout).toContain(`read ${region.length}/${region.length} bytes at offset ${region.offset}`);
  });

  it('qemu-img convert -n and nbdcopy refuse to write into it; qemu-img compare still reads it', async () => {
    const convert = await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', other, server.uri('ro')], { timeoutMs: 30_000 });
    expect(convert.code, describeRun(convert)).not.toBe(0);
    expect(convert.stderr).toContain('Permission denied');
    const copy = await run('nbdcopy', [other, server.uri('ro')], { timeoutMs: 30_000 });
    expect(copy.code, describeRun(copy)).not.toBe(0);
    expect(copy.stderr).toContain('read-only');
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', server.uri('ro'), reference], { timeoutMs: 30_000 });
    expect(cmp.code, describeRun(cmp)).toBe(0);
  });

  it('answers every write command from libnbd (client checks off) with EPERM, FUA with EINVAL', async () => {
    const script = [
      'h.set_strict_mode(0)',
      [
        'for name, f in [("write", lambda: h.pwrite(b"x" * 4096, 4096)), ("zero", lambda: h.zero(4096, 0)),',
        '                ("zero_no_hole", lambda: h.zero(4096, 0, nbd.CMD_FLAG_NO_HOLE)), ("trim", lambda: h.trim(65536, 0)),',
        '                ("write_fua", lambda: h.pwrite(b"x", 0, nbd.CMD_FLAG_FUA)), ("flush", lambda: h.flush()),',
        '                ("cache", lambda: h.cache(4096, 0)), ("read", lambda: h.pread(4096, 0))]:',
        '  try:',
        '    f(); print(name, 0)',
        '  except nbd.Error as e:',
        '    print(name, e.errnum)',
      ].join('\n'),
      'h.shutdown()',
    ];
    const r = await run('nbdsh', ['-u', server.uri('ro'), ...script.flatMap((s) => ['-c', s])], { env: debianPythonEnv(), timeoutMs: 30_000 });
    expect(r.code, describeRun(r)).toBe(0);
    const results = Object.fromEntries(r.stdout.trim().split('\n').map((l) => l.split(' ')).map(([k, v]) => [k, Number(v)]));
    // The flag check comes before the permission check: FUA is not offered here, so EINVAL.
    expect(results).toEqual({ write: 1, zero: 1, zero_no_hole: 1, trim: 1, write_fua: 22, flush: 0, cache: 0, read: 0 });
  });

  it('holds its files open read-only and leaves them unchanged', async () => {
    const fdDir = `/proc/${server.pid}/fd`;
    const modes = new Map<string, number>();
    // Reading the whole export opens every file it needs (a sparse bundle opens its bands when read).
    await sha256Export(server.tcp, 'ro');
    for (const fd of await fs.readdir(fdDir)) {
      const target = await fs.readlink(path.join(fdDir, fd)).catch(() => '');
      if (!files.includes(target)) continue;
      const info = await fs.readFile(`/proc/${server.pid}/fdinfo/${fd}`, 'utf8');
      const flags = parseInt(/^flags:\s+([0-7]+)/m.exec(info)![1], 8);
      modes.set(target, Math.max(modes.get(target) ?? 0, flags & 3));
    }
    // Each file given (a directory: some of its files) and each backing file is held open; every
    // file of the export that is open is open read-only, but a cache layer (the server writes
    // its fills) and a URL base (no file of the server's).
    for (const p of [...image.paths, ...(image.backingFiles ?? [])].filter((f) => f !== image.cache && !/^https?:\/\//.test(f))) {
      expect([...modes.keys()].filter((f) => f === p || f.startsWith(`${p}/`)).length, `${p} held open`).toBeGreaterThan(0);
    }
    for (const [p, mode] of modes) if (p !== image.cache) expect(mode, `open mode of ${p} (0 = O_RDONLY)`).toBe(0);
    for (const p of files) expect(await sha256File(p), p).toBe(before.get(p));
  });
});
