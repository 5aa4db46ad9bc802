/**
 * qemu-img against the real `stackbd serve` with a 1 GiB export (sparse, a few MiB of random
 * data at known places): info, convert out of the export compared by sha256, compare (and a
 * compare that must find a planted difference), convert into an export (-n, with -W and 16
 * coroutines: many writes in flight, out of order), bench (20000 writes, 64 in flight, then
 * checked byte for byte), map --output=json. Kinds with a modest budget get the same shapes at
 * a quarter of the size (256 MiB, 5000 writes).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/client.js';
import { requireTool } from '../helpers/require-tool.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { EXPORT_KINDS, prepareExport, type PreparedExport } from './export-kinds.js';
import { releaseExports } from './http-kind.js';
import {
  DiskModel,
  GiB,
  KiB,
  MiB,
  Prng,
  describeRun,
  layoutBuffer,
  randomLayout,
  run,
  sha256Export,
  sha256SparseFile,
  sha256Layout,
  startStackbd,
  writeRawImage,
  type ImageLayout,
  type Stackbd,
} from './harness.js';

/** 1 GiB: data at the very start and end, unaligned pieces in the middle, the rest holes. */
const BIG: ImageLayout = {
  size: 1 * GiB,
  regions: [
    { offset: 0, length: 1 * MiB, seed: 1 },
    { offset: 100 * MiB + 4097, length: 2 * MiB + 5, seed: 2 },
    { offset: 300 * MiB, length: 64 * KiB, seed: 3 },
    { offset: 700 * MiB + 1, length: 512 * KiB - 1, seed: 4 },
    { offset: 999 * MiB + 12345, length: 1, seed: 5 },
    { offset: 1 * GiB - 1 * MiB, length: 1 * MiB, seed: 6 },
  ],
};

/** BIG at a quarter of the size: the same regions at a quarter of the offsets. */
const MODEST: ImageLayout = {
  size: 256 * MiB,
  regions: [
    { offset: 0, length: 1 * MiB, seed: 1 },
    { offset: 25 * MiB + 4097, length: 2 * MiB + 5, seed: 2 },
    { offset: 75 * MiB, length: 64 * KiB, seed: 3 },
    { offset: 175 * MiB + 1, length: 512 * KiB - 1, seed: 4 },
    { offset: 249 * MiB + 12345, length: 1, seed: 5 },
    { offset: 256 * MiB - 1 * MiB, length: 1 * MiB, seed: 6 },
  ],
};

describe.each(EXPORT_KINDS)('qemu-img against a $name export', (kind) => {
  const full = kind.budget === 'full';
  const BIG_LAYOUT = full ? BIG : MODEST;
  const BIG_SIZE = BIG_LAYOUT.size;
  const BIG_LABEL = full ? '1 GiB' : '256 MiB';
  const TARGET_SIZE = full ? 256 * MiB : 64 * MiB;
  const BENCH_COUNT = full ? 20_000 : 5_000;
  let dir: string;
  let server: Stackbd;
  let reference: string;
  let bigSha: string;
  let image: PreparedExport;
  let source: string;
  let sourceLayout: ImageLayout;

  beforeAll(async () => {
    requireTool('qemu-img');
    dir = await makeTempDir('stackbd-qemu-img-');

    bigSha = sha256Layout(BIG_LAYOUT);
    image = await prepareExport(kind, dir, 'big', BIG_LAYOUT);
    reference = image.reference;
    // The target of `convert -n` starts with other data, which the conversion must replace.
    const rng = new Prng(0x1316);
    const targetLayout = randomLayout(rng, TARGET_SIZE, 12, 1, 1 * MiB);
    const target = await prepareExport(kind, dir, 'target', targetLayout);
    sourceLayout = randomLayout(rng, TARGET_SIZE, 16, 1, 2 * MiB);
    source = path.join(dir, 'source.raw');
    await writeRawImage(source, sourceLayout);
    server = await startStackbd({
      exports: [
        { name: 'big', paths: image.paths },
        { name: 'target', paths: target.paths },
      ],
    });
  });

  afterAll(async () => {
    await server?.stop();
    if (dir) {
      await releaseExports(dir);
      await removeDir(dir);
    }
  });

  it(`info reports a raw image of ${BIG_LABEL}`, async () => {
    const r = await run('qemu-img', ['info', '--output=json', server.uri('big')], { timeoutMs: 30_000 });
    expect(r.code, describeRun(r)).toBe(0);
    const info = JSON.parse(r.stdout) as { 'virtual-size': number; format: string; filename: string };
    expect(info['virtual-size']).toBe(BIG_SIZE);
    expect(info.format).toBe('raw');
    expect(info.filename).toBe(server.uri('big'));
    const text = await run('qemu-img', ['info', '-f', 'raw', server.uri('big')], { timeoutMs: 30_000 });
    expect(text.code, describeRun(text)).toBe(0);
    expect(text.stdout).toContain(`virtual size: ${BIG_LABEL} (${BIG_SIZE} bytes)`);
  });

  it(`convert copies the ${BIG_LABEL} export into a file with the same sha256`, async () => {
    const out = path.join(dir, 'converted.raw');
    const r = await run('qemu-img', ['convert', '-p', '-f', 'raw', '-O', 'raw', server.uri('big'), out], { timeoutMs: 90_000 });
    expect(r.code, describeRun(r)).toBe(0);
    expect((await fs.stat(out)).size).toBe(BIG_SIZE);
    expect(await sha256SparseFile(out)).toBe(bigSha);
    await fs.rm(out);
  });

  it('compare finds the export identical to its source file', async () => {
    const r = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', server.uri('big'), reference], { timeoutMs: 90_000 });
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout.trim()).toBe('Images are identical.');
  });

  it('compare finds a planted difference (the check above can fail)', async () => {
    // Early in the disk, inside a data region, so the compare stops after ~100 MiB.
    const planted = BIG_LAYOUT.regions[1].offset + 12345;
    const changed = path.join(dir, 'changed.raw');
    await writeRawImage(changed, BIG_LAYOUT);
    const handle = await fs.open(changed, 'r+');
    await handle.write(Buffer.from('stackbd'), 0, 7, planted);
    await handle.close();
    const r = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', server.uri('big'), changed], { timeoutMs: 90_000 });
    expect(r.code, describeRun(r)).toBe(1);
    const m = /Content mismatch at offset (\d+)!/.exec(r.stdout);
    expect(m, describeRun(r)).not.toBeNull();
    const at = Number(m![1]);
    expect(at).toBeLessThanOrEqual(planted);
    expect(at).toBeGreaterThan(planted - 4096);
    await fs.rm(changed);
  });

  it('convert -n writes a file into an export (-W, 16 coroutines), replacing what was there', async () => {
    const r = await run('qemu-img', ['convert', '-n', '-W', '-m', '16', '-f', 'raw', '-O', 'raw', source, server.uri('target')], { timeoutMs: 90_000 });
    expect(r.code, describeRun(r)).toBe(0);
    const seen = await sha256Export(server.tcp, 'target');
    expect(seen.size).toBe(TARGET_SIZE);
    expect(seen.sha256).toBe(sha256Layout(sourceLayout));
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', server.uri('target'), source], { timeoutMs: 60_000 });
    expect(cmp.code, describeRun(cmp)).toBe(0);
  });

  it(`bench: ${BENCH_COUNT} writes of 4 KiB, 64 in flight, land exactly where they should`, async () => {
    // Runs after the convert above: the target holds the source file's content.
    const count = BENCH_COUNT;
    const step = 12_288;
    const r = await run(
      'qemu-img',
      ['bench', '-f', 'raw', '-w', '-c', String(count), '-d', '64', '-s', '4096', '-S', String(step), '--pattern=0x5c', server.uri('target')],
      { timeoutMs: 60_000 },
    );
    expect(r.code, describeRun(r)).toBe(0);
    expect(r.stdout).toContain(`Sending ${count} write requests, 4096 bytes each, 64 in parallel`);
    const model = new DiskModel(layoutBuffer(sourceLayout));
    for (let i = 0; i < count; i++) model.fill(i * step, 4096, 0x5c);
    const client = await NbdClient.connect(server.tcp, { exportName: 'target' });
    try {
      for (let offset = 0; offset < TARGET_SIZE; offset += 8 * MiB) {
        const got = await client.pread(offset, 8 * MiB);
        const at = model.firstMismatch(offset, got);
        expect(at, at >= 0 ? model.describeMismatch(offset, got, at) : '').toBe(-1);
      }
    } finally {
      await client.disconnect();
    }
  });

  it('map --output=json shows the allocation the export reports', async () => {
    const r = await run('qemu-img', ['map', '--output=json', '-f', 'raw', server.uri('big')], { timeoutMs: 60_000 });
    expect(r.code, describeRun(r)).toBe(0);
    const entries = JSON.parse(r.stdout) as Array<{ start: number; length: number; data: boolean; zero: boolean; present: boolean; offset?: number }>;
    const merged: Array<{ start: number; length: number; data: boolean; zero: boolean }> = [];
    for (const e of entries) {
      const last = merged[merged.length - 1];
      if (last && last.data === e.data && last.zero === e.zero && last.start + last.length === e.start) last.length += e.length;
      else merged.push({ start: e.start, length: e.length, data: e.data, zero: e.zero });
    }
    const want: typeof merged = [];
    for (const x of image.extents) {
      const data = (x.allocation & 1) === 0;
      const zero = (x.allocation & 2) !== 0;
      const last = want[want.length - 1];
      if (last && last.data === data && last.zero === zero) last.length += x.length;
      else want.push({ start: x.offset, length: x.length, data, zero });
    }
    expect(merged).toEqual(want);
    for (const e of entries) {
      expect(e.present).toBe(true);
      // Raw over NBD: a data extent maps to the same offset of the export.
      if (e.data) expect(e.offset).toBe(e.start);
    }
  });
});
