/**
 * nbd:// bases on a real upstream, nbdkit: the same bytes and map as the upstream, read-only,
 * multi-conn when offered (connections counted in nbdkit's log), the error filter's failures
 * as EIO for those requests only, many reads in flight on a slow upstream, reads in flight
 * replayed across an upstream restart, a restarted upstream of another size refused, the retry
 * budget, an upstream without base:allocation, TCP, and a minimum block size above 512.
 */
import fs from 'node:fs/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import { RequestError } from '../../src/block/errors.js';
import type { NbdBase } from '../../src/remote/nbd.js';
import { DiskImage } from '../../src/stack/disk-image.js';
import { useTmpDir } from '../formats/helpers/tmp-dir.js';
import { requireTool } from '../helpers/require-tool.js';
import { runCommand } from '../helpers/run-command.js';
import { DISK_SIZE, makeDisk, nbdinfoMap } from './helpers/disk.js';
import { trackUpstreams } from './helpers/lifecycle.js';
import { startNbdkit, type Listen, type Upstream } from './helpers/upstream.js';

const KiB = 1024;

async function failureOf(p: Promise<unknown>): Promise<RequestError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  if (!(err instanceof RequestError)) throw new Error(`expected a RequestError, got ${String(err)}`);
  return err;
}

/** Polls `check` until it is true: a guard against hanging, not a measure of time. */
async function until(what: string, check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`still waiting for ${what}`);
}

async function logLines(log: string, pattern: RegExp): Promise<string[]> {
  const text = await fs.readFile(log, 'utf8').catch(() => '');
  return text.split('\n').filter((l) => pattern.test(l));
}

describe('nbd:// base on nbdkit', () => {
  const tmp = useTmpDir('nbd-nbdkit');
  let disk: string;
  let content: Buffer;
  const { upstream, forget, open } = trackUpstreams();

  beforeAll(async () => {
    requireTool('nbdkit');
    requireTool('nbdinfo');
    disk = tmp('disk.img');
    content = await makeDisk(disk);
  });

  async function nbdkit(listen: Listen, args: string[]): Promise<Upstream> {
    return upstream(await startNbdkit(listen, args));
  }

  async function readAt(base: NbdBase, offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length, 0xee);
    await base.read(buf, offset);
    return buf;
  }

  it('reads the bytes and the map of the upstream, and refuses writes', async () => {
    const up = await nbdkit({ socket: tmp('file.sock') }, ['file', disk]);
    const base = await open(up.uri());
    expect({ format: base.format, readOnly: base.readOnly, size: base.size, blockSize: base.blockSize, layerUUID: base.layerUUID }).toEqual({
      format: 'nbd',
      readOnly: true,
      size: DISK_SIZE,
      blockSize: 512,
      layerUUID: null,
    });
    expect((await readAt(base, 0, DISK_SIZE)).equals(content)).toBe(true);
    expect((await readAt(base, 1000, 70_000)).equals(content.subarray(1000, 71_000))).toBe(true);
    expect((await readAt(base, 1024 * KiB + 3, 5)).equals(content.subarray(1024 * KiB + 3, 1024 * KiB + 8))).toBe(true);
    expect(await base.map(0, DISK_SIZE)).toEqual(await nbdinfoMap(up.uri()));
    const part = await base.map(60 * KiB, 8 * KiB);
    expect(part).toEqual([
      { offset: 60 * KiB, length: 4 * KiB, state: 'data' },
      { offset: 64 * KiB, length: 4 * KiB, state: 'zero' },
    ]);
    expect(await base.pin()).toEqual({ size: DISK_SIZE, export: '' });
    expect((await failureOf(base.write(Buffer.alloc(512), 0))).errno).toBe('EPERM');
    expect((await failureOf(base.zero(0, 512))).errno).toBe('EPERM');
  });

  it('reads what was written into nbdkit-memory, with its map', async () => {
    requireTool('qemu-io');
    const up = await nbdkit({ socket: tmp('memory.sock') }, ['memory', '1M']);
    const w = await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 64k 64k', '-c', 'write -P 0xa5 300000 1000', up.uri()]);
    expect(w.code, w.stderr).toBe(0);
    const base = await open(up.uri());
    const want = Buffer.alloc(1024 * KiB);
    want.fill(0x5a, 64 * KiB, 128 * KiB).fill(0xa5, 300_000, 301_000);
    expect((await readAt(base, 0, 1024 * KiB)).equals(want)).toBe(true);
    const map = await base.map(0, 1024 * KiB);
    expect(map).toEqual(await nbdinfoMap(up.uri()));
    expect(map.filter((r) => r.state === 'data').length).toBeGreaterThanOrEqual(2);
  });

  it('opens through DiskImage and reads through the stack', async () => {
    const up = await nbdkit({ socket: tmp('stack.sock') }, ['file', disk]);
    const image = await DiskImage.open([up.uri()]);
    try {
      expect(image.layers[0].format).toBe('nbd');
      const buf = Buffer.alloc(256 * KiB);
      await image.stack.read(buf, 960 * KiB);
      expect(buf.equals(content.subarray(960 * KiB, 1216 * KiB))).toBe(true);
    } finally {
      await image.close();
    }
    // A remote base is base-only, like RAW: it cannot sit above another layer.
    await expect(DiskImage.open([up.uri(), up.uri()])).rejects.toThrow(/a remote base can only be the base of a stack/);
  });

  it('uses four connections when the upstream offers multi-conn and spreads reads over them; one when it does not', async () => {
    const log = tmp('multi.log');
    const up = await nbdkit({ socket: tmp('multi.sock') }, ['--filter=log', '--filter=delay', 'file', disk, `logfile=${log}`, 'delay-read=100ms']);
    const base = await open(up.uri());
    expect(base.stats.connections).toBe(4);
    const offsets = Array.from({ length: 16 }, (_, i) => i * 64 * KiB);
    const reads = await Promise.all(offsets.map((o) => readAt(base, o, 4 * KiB)));
    reads.forEach((r, i) => expect(r.equals(content.subarray(offsets[i], offsets[i] + 4 * KiB))).toBe(true));
    expect(await logLines(log, / Connect /)).toHaveLength(4);
    const readers = new Set((await logLines(log, / Read id=/)).map((l) => /connection=(\d+)/.exec(l)?.[1]));
    expect(readers.size).toBe(4);

    const singleLog = tmp('single.log');
    const single = await nbdkit({ socket: tmp('single.sock') }, ['--filter=log', '--filter=multi-conn', 'file', disk, `logfile=${singleLog}`, 'multi-conn-mode=disable']);
    const one = await open(single.uri());
    expect(one.stats.connections).toBe(1);
    await Promise.all(offsets.map((o) => readAt(one, o, 4 * KiB)));
    expect(await logLines(singleLog, / Connect /)).toHaveLength(1);
  });

  it("fails the reads the error filter fails with EIO, and only those", async () => {
    const trigger = tmp('inject');
    await fs.writeFile(trigger, '');
    const up = await nbdkit({ socket: tmp('error.sock') }, ['--filter=error', 'file', disk, 'error-pread=EIO', 'error-pread-rate=100%', `error-pread-file=${trigger}`]);
    const base = await open(up.uri());
    const err = await failureOf(readAt(base, 0, 4 * KiB));
    expect(err.errno).toBe('EIO');
    expect(err.message).toMatch(/the upstream answered error 5/);
    // Block status is not a read: it still answers while reads fail.
    expect(await base.map(0, 128 * KiB)).toEqual([
      { offset: 0, length: 64 * KiB, state: 'data' },
      { offset: 64 * KiB, length: 64 * KiB, state: 'zero' },
    ]);
    await fs.rm(trigger);
    expect((await readAt(base, 0, 4 * KiB)).equals(content.subarray(0, 4 * KiB))).toBe(true);
    // The connections stayed up: an error reply is an answer, not a failure of the link.
    expect(base.stats).toMatchObject({ connects: 4, replays: 0 });
  });

  it('keeps many reads in flight on a slow upstream and gets them all right', async () => {
    const up = await nbdkit({ socket: tmp('slow.sock') }, ['--filter=delay', 'file', disk, 'delay-read=300ms']);
    const base = await open(up.uri());
    const offsets = Array.from({ length: 32 }, (_, i) => (i * 131 * KiB) % (DISK_SIZE - 64 * KiB));
    const reads = await Promise.all(offsets.map((o) => readAt(base, o, 64 * KiB)));
    reads.forEach((r, i) => expect(r.equals(content.subarray(offsets[i], offsets[i] + 64 * KiB))).toBe(true));
    expect(base.stats.peakInFlight).toBe(32);
  });

  it('replays the reads in flight when the upstream is killed and started again, with the right data', async () => {
    const socket = tmp('restart.sock');
    const log = tmp('restart.log');
    const up = await nbdkit({ socket }, ['--filter=log', '--filter=delay', 'file', disk, `logfile=${log}`, 'delay-read=5']);
    const warnings: string[] = [];
    const base = await open(up.uri(), { onWarning: (w) => warnings.push(w), backoffBaseMs: 20 });
    const offsets = Array.from({ length: 8 }, (_, i) => i * 448 * KiB);
    const reads = offsets.map((o) => readAt(base, o, 64 * KiB));
    // Every read has reached the upstream and sits in its delay when it is killed.
    await until('the reads to reach nbdkit', async () => (await logLines(log, / Read id=/)).length >= offsets.length);
    await up.stop('SIGKILL');
    forget(up);
    await nbdkit({ socket }, ['file', disk]);
    const got = await Promise.all(reads);
    got.forEach((r, i) => expect(r.equals(content.subarray(offsets[i], offsets[i] + 64 * KiB))).toBe(true));
    expect(base.stats.replays).toBeGreaterThanOrEqual(offsets.length);
    expect(base.stats.connects).toBeGreaterThan(4);
    expect(warnings.some((w) => /lost a connection to the upstream; reconnecting/.test(w))).toBe(true);
    expect(warnings.some((w) => /reconnected to the upstream after \d+ ms/.test(w))).toBe(true);
    expect(base.refused).toBeNull();
  });

  it('refuses an upstream that comes back with another size: reads fail with EIO, reported once', async () => {
    const file = tmp('resized.img');
    await fs.copyFile(disk, file);
    const socket = tmp('resized.sock');
    const log = tmp('resized.log');
    const up = await nbdkit({ socket }, ['--filter=log', '--filter=delay', 'file', file, `logfile=${log}`, 'delay-read=5']);
    const warnings: string[] = [];
    const base = await open(up.uri(), { onWarning: (w) => warnings.push(w), backoffBaseMs: 20 });
    const reads = [0, 1024 * KiB].map((o) => failureOf(readAt(base, o, 4 * KiB)));
    await until('the reads to reach nbdkit', async () => (await logLines(log, / Read id=/)).length >= 2);
    await up.stop('SIGKILL');
    forget(up);
    await fs.truncate(file, DISK_SIZE * 2);
    await nbdkit({ socket }, ['file', file]);
    for (const err of await Promise.all(reads)) {
      expect(err.errno).toBe('EIO');
      expect(err.message).toMatch(/the upstream's size changed from 4194304 to 8388608 bytes; the base refuses to read from it/);
    }
    expect(base.refused).toMatch(/size changed/);
    expect((await failureOf(readAt(base, 0, 512))).errno).toBe('EIO');
    expect(warnings.filter((w) => /size changed/.test(w))).toHaveLength(1);
  });

  it('fails a read with EIO once the upstream has been away for the whole retry budget', async () => {
    const up = await nbdkit({ socket: tmp('gone.sock') }, ['file', disk]);
    const base = await open(up.uri(), { retryBudgetMs: 1500, backoffBaseMs: 20, backoffCapMs: 200 });
    await up.stop('SIGKILL');
    forget(up);
    const err = await failureOf(readAt(base, 0, 4 * KiB));
    expect(err.errno).toBe('EIO');
    expect(err.message).toMatch(/no answer from the upstream within 1500 ms/);
  });

  it('maps everything as data when the upstream offers no base:allocation', async () => {
    const up = await nbdkit({ socket: tmp('nosr.sock') }, ['--no-sr', 'file', disk]);
    const base = await open(up.uri());
    expect(await base.map(0, DISK_SIZE)).toEqual([{ offset: 0, length: DISK_SIZE, state: 'data' }]);
    expect((await readAt(base, 1000, 70_000)).equals(content.subarray(1000, 71_000))).toBe(true);
  });

  it('reads over TCP (nbd://127.0.0.1:PORT/)', async () => {
    const up = await nbdkit({ port: 0 }, ['file', disk]);
    expect(up.uri()).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/$/);
    const base = await open(up.uri());
    expect((await readAt(base, 0, 128 * KiB)).equals(content.subarray(0, 128 * KiB))).toBe(true);
  });

  it('aligns every request to an upstream minimum block size of 4096 and splits at its maximum payload', async () => {
    const args = ['--filter=blocksize-policy', 'file', disk, 'blocksize-minimum=4096', 'blocksize-maximum=64K', 'blocksize-error-policy=error'];
    const up = await nbdkit({ socket: tmp('blocks.sock') }, args);
    const base = await open(up.uri());
    expect(base.blockSize).toBe(4096);
    expect((await readAt(base, 1000, 70_000)).equals(content.subarray(1000, 71_000))).toBe(true);
    expect((await readAt(base, 4096 + 512, 512)).equals(content.subarray(4608, 5120))).toBe(true);
    expect((await readAt(base, 0, 1024 * KiB)).equals(content.subarray(0, 1024 * KiB))).toBe(true);
    expect(await base.map(0, DISK_SIZE)).toEqual(await nbdinfoMap(up.uri()));
  });
});
