/**
 * qemu-io (QEMU's block layer as an NBD client) against the real `stackbd serve`: pattern
 * writes and reads at unaligned offsets and lengths, writev/readv, aio_write/aio_read with
 * several requests in flight, write -z (with and without -u), discard, flush; in QEMU's default
 * writethrough mode (every write carries FUA) and with -t writeback. qemu-io verifies each
 * read -P itself; afterwards our own client reads the whole disk and compares it with a model.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/client.js';
import { requireTool } from '../helpers/require-tool.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { EXPORT_KINDS, prepareExport, trimEffect, type ExportKind } from './export-kinds.js';
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
  regionBytes,
  run,
  startStackbd,
  type ImageLayout,
  type RunResult,
  type Stackbd,
  type Target,
} from './harness.js';

const SIZE = 64 * MiB;

/** 8 GiB, sparse: data only just below 4 GiB. */
const HUGE: ImageLayout = { size: 8 * GiB, regions: [{ offset: 4 * GiB - 70_000, length: 65_536, seed: 8 }] };

/** A qemu-io command list with the lines it must print and the model of what it does. */
class Script {
  readonly commands: string[] = [];
  readonly expected: string[] = [];

  constructor(
    readonly model: DiskModel,
    readonly kind: ExportKind,
  ) {}

  /** Adds a pattern command: `VERB -P PATTERN OFFSET LENGTH...`, which prints
   * "wrote|read TOTAL/TOTAL bytes at offset OFFSET"; a write also changes the model. */
  private pattern(verb: string, offset: number, lengths: number[], pattern: number, flags = ''): this {
    const total = lengths.reduce((a, b) => a + b, 0);
    const hex = `0x${pattern.toString(16).padStart(2, '0')}`;
    this.commands.push(`${verb} ${flags ? `${flags} ` : ''}-P ${hex} ${offset} ${lengths.join(' ')}`);
    const writes = verb.includes('write');
    this.expected.push(`${writes ? 'wrote' : 'read'} ${total}/${total} bytes at offset ${offset}`);
    if (writes) this.model.fill(offset, total, pattern);
    return this;
  }

  write(offset: number, length: number, pattern: number, flags = ''): this {
    return this.pattern('write', offset, [length], pattern, flags);
  }

  read(offset: number, length: number, pattern: number): this {
    return this.pattern('read', offset, [length], pattern);
  }

  writev(offset: number, lengths: number[], pattern: number): this {
    return this.pattern('writev', offset, lengths, pattern);
  }

  readv(offset: number, lengths: number[], pattern: number): this {
    return this.pattern('readv', offset, lengths, pattern);
  }

  aioWrite(offset: number, length: number, pattern: number): this {
    return this.pattern('aio_write', offset, [length], pattern);
  }

  aioRead(offset: number, length: number, pattern: number): this {
    return this.pattern('aio_read', offset, [length], pattern);
  }

  aioFlush(): this {
    this.commands.push('aio_flush');
    return this;
  }

  zero(offset: number, length: number, flags = ''): this {
    this.commands.push(`write -z ${flags ? `${flags} ` : ''}${offset} ${length}`);
    this.expected.push(`wrote ${length}/${length} bytes at offset ${offset}`);
    this.model.zero(offset, length);
    return this;
  }

  discard(offset: number, length: number): this {
    this.commands.push(`discard ${offset} ${length}`);
    this.expected.push(`discard ${length}/${length} bytes at offset ${offset}`);
    const effect = trimEffect(this.kind, offset, length);
    for (const [a, b] of effect.zeroed) this.model.zero(a, b - a);
    for (const [a, b] of effect.undefined) this.model.trim(a, b - a);
    return this;
  }

  flush(): this {
    this.commands.push('flush');
    return this;
  }

  args(): string[] {
    return this.commands.flatMap((c) => ['-c', c]);
  }
}

function checkOutput(r: RunResult, script: Script): void {
  const context = describeRun(r);
  expect(r.stdout + r.stderr, context).not.toMatch(/Pattern verification failed/);
  expect(r.stdout + r.stderr, context).not.toMatch(/failed|error/i);
  expect(r.code, context).toBe(0);
  const lines = r.stdout.split('\n');
  for (const want of script.expected) expect(lines, `missing "${want}"\n${context}`).toContain(want);
}

async function checkDisk(target: Target, model: DiskModel): Promise<void> {
  const client = await NbdClient.connect(target, { exportName: 'disk' });
  try {
    expect(client.size).toBe(model.size);
    for (let offset = 0; offset < model.size; offset += 8 * MiB) {
      const got = await client.pread(offset, Math.min(8 * MiB, model.size - offset));
      const at = model.firstMismatch(offset, got);
      expect(at, at >= 0 ? model.describeMismatch(offset, got, at) : '').toBe(-1);
    }
  } finally {
    await client.disconnect();
  }
}

describe.each(EXPORT_KINDS)('qemu-io against a $name export', (kind) => {
  let dir: string;
  let server: Stackbd;
  let socket: string;
  let layout: ImageLayout;
  let model: DiskModel;

  beforeAll(async () => {
    requireTool('qemu-io');
    dir = await makeTempDir('stackbd-qemu-io-');
    socket = path.join(dir, 'nbd.sock');
    layout = randomLayout(new Prng(0x9e_10), SIZE, 8, 1, 512 * KiB);
    const image = await prepareExport(kind, dir, 'disk', layout);
    const huge = await prepareExport(kind, dir, 'huge', HUGE);
    server = await startStackbd({
      exports: [
        { name: 'disk', paths: image.paths },
        { name: 'huge', paths: huge.paths },
      ],
      socket,
    });
    model = new DiskModel(layoutBuffer(layout));
  });

  afterAll(async () => {
    await server?.stop();
    if (dir) {
      await releaseExports(dir);
      await removeDir(dir);
    }
  });

  function qemuIo(script: Script, extra: string[] = [], uri = server.uri('disk')): Promise<RunResult> {
    return run('qemu-io', ['-f', 'raw', ...extra, ...script.args(), uri], { timeoutMs: 60_000 });
  }

  it("writes and reads patterns at unaligned offsets and lengths (-c 'write -P 0xab 1000 5000' -c 'read -P 0xab 1000 5000')", async () => {
    const cases: Array<[number, number]> = [
      [1000, 5000],
      [0, 1],
      [511, 2],
      [8191, 4098],
      [65535, 131073],
      [1 * MiB + 17, 3 * MiB + 3],
      [10 * MiB - 1, 1],
      [SIZE - 778, 777],
      [SIZE - 1, 1],
      [33 * MiB + 513, 30 * MiB],
    ];
    const script = new Script(model, kind);
    cases.forEach(([offset, length], i) => script.write(offset, length, 0xa0 + i));
    cases.forEach(([offset, length], i) => script.read(offset, length, 0xa0 + i));
    const r = await qemuIo(script);
    checkOutput(r, script);
    await checkDisk(server.tcp, model);
  });

  it('writev/readv with uneven vectors, aio_write/aio_read with several in flight', async () => {
    const script = new Script(model, kind);
    script.writev(7001, [100, 3000, 17], 0xcd).writev(2 * MiB + 3, [1, 4096, 65536, 511], 0xce);
    for (let i = 0; i < 16; i++) script.aioWrite(20 * MiB + i * 70_001 + (i % 3), 1 + i * 4099, 0x10 + i);
    script.aioFlush();
    for (let i = 0; i < 16; i++) script.aioRead(20 * MiB + i * 70_001 + (i % 3), 1 + i * 4099, 0x10 + i);
    script.aioFlush();
    script.readv(7001, [3117], 0xcd).readv(2 * MiB + 3, [70144], 0xce);
    const r = await qemuIo(script);
    checkOutput(r, script);
    await checkDisk(server.tcp, model);
  });

  it('write -z (NO_HOLE), write -z -u (may unmap), discard, flush; over the unix socket', async () => {
    const script = new Script(model, kind);
    script.write(40 * MiB, 4 * MiB, 0x5a).flush();
    script.zero(40 * MiB + 1, 1000).zero(40 * MiB + 65536, 65536, '-u').zero(41 * MiB + 7, 2 * MiB - 14);
    script.discard(43 * MiB, 512 * KiB).discard(43 * MiB + 600 * KiB + 1, 4095).flush();
    script.read(40 * MiB, 1, 0x5a).read(40 * MiB + 1, 1000, 0).read(40 * MiB + 1001, 65536 - 1001, 0x5a);
    script.read(40 * MiB + 65536, 65536, 0).read(41 * MiB + 7, 2 * MiB - 14, 0);
    // Half a chunk: RAW punches it (zeros), the chunked kinds keep it (only whole chunks may be
    // released). The unaligned 4095 bytes after it: the same, read by checkDisk below.
    const trimmed = trimEffect(kind, 43 * MiB, 512 * KiB);
    expect(trimmed.undefined).toEqual([]);
    script.read(43 * MiB, 512 * KiB, trimmed.zeroed.length > 0 ? 0 : 0x5a);
    // qemu-io's default cache mode is writethrough: the zeroes go out with FUA as well.
    const r = await qemuIo(script, [], server.unixUri('disk'));
    checkOutput(r, script);
    await checkDisk({ kind: 'unix', path: socket }, model);
  });

  it('-t writeback (no FUA) with an explicit flush, and aio_write -z', async () => {
    const script = new Script(model, kind);
    script.write(50 * MiB + 3, 300_000, 0x77).aioWrite(52 * MiB, 8191, 0x78);
    script.commands.push(`aio_write -z ${53 * MiB + 5} 4096`);
    script.expected.push(`wrote 4096/4096 bytes at offset ${53 * MiB + 5}`);
    model.zero(53 * MiB + 5, 4096);
    script.aioFlush().flush();
    script.read(50 * MiB + 3, 300_000, 0x77).read(52 * MiB, 8191, 0x78).read(53 * MiB + 5, 4096, 0);
    const r = await qemuIo(script, ['-t', 'writeback']);
    checkOutput(r, script);
    await checkDisk(server.tcp, model);
  });

  it('reads and writes past 4 GiB of an 8 GiB export (64-bit offsets), up to its last byte', async () => {
    const hugeModel = new Map<number, { length: number; pattern: number }>();
    const script = new Script(new DiskModel(Buffer.alloc(0)), kind);
    const cases: Array<[number, number, number]> = [
      [4 * GiB - 3, 7, 0x41],
      [6 * GiB + 3, 70_001, 0x42],
      [8 * GiB - 1, 1, 0x43],
      [5 * GiB - 512, 1 * MiB, 0x44],
    ];
    for (const [offset, length, pattern] of cases) {
      script.commands.push(`write -P 0x${pattern.toString(16)} ${offset} ${length}`);
      script.expected.push(`wrote ${length}/${length} bytes at offset ${offset}`);
      hugeModel.set(offset, { length, pattern });
    }
    for (const [offset, length, pattern] of cases) script.read(offset, length, pattern);
    // What the layout put just below 4 GiB is still there.
    const below = HUGE.regions[0];
    const r = await qemuIo(script, [], server.uri('huge'));
    checkOutput(r, script);
    const client = await NbdClient.connect(server.tcp, { exportName: 'huge' });
    try {
      expect(client.size).toBe(HUGE.size);
      for (const [offset, { length, pattern }] of hugeModel) {
        // One byte either side too, where the disk has them: nothing spilled over.
        const end = Math.min(offset + length + 1, HUGE.size);
        const got = await client.pread(offset - 1, end - (offset - 1));
        expect(got.subarray(1, 1 + length).equals(Buffer.alloc(length, pattern)), `${offset}+${length}`).toBe(true);
        expect(got[0], `byte before ${offset}`).not.toBe(pattern);
        if (end > offset + length) expect(got[got.length - 1], `byte after ${offset}+${length}`).not.toBe(pattern);
      }
      const got = await client.pread(below.offset, below.length);
      expect(got.equals(regionBytes(below))).toBe(true);
    } finally {
      await client.disconnect();
    }
  });

  it('reports a wrong pattern (the check above can fail)', async () => {
    const offset = 1000;
    const script = new Script(model, kind).read(offset, 5000, 0x01);
    const r = await qemuIo(script);
    expect(r.stdout, describeRun(r)).toContain(`Pattern verification failed at offset ${offset}, 5000 bytes`);
    expect(r.code, describeRun(r)).not.toBe(0);
  });
});
