/**
 * nbdcopy (libnbd) against the real `stackbd serve`: out of an export into a file, from a file
 * into an export with four connections at once (multi-conn; nbdcopy caps connections at its
 * thread count, which defaults to the number of CPUs, so --threads is given too), and from one
 * export into another; every result compared by sha256 with the content it must have.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireTool } from '../helpers/require-tool.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { EXPORT_KINDS, prepareExport } from './export-kinds.js';
import { releaseExports } from './http-kind.js';
import {
  MiB,
  Prng,
  describeRun,
  logEntries,
  randomLayout,
  run,
  sha256Export,
  sha256Layout,
  sha256SparseFile,
  startStackbd,
  writeRawImage,
  type ImageLayout,
  type RunResult,
  type Stackbd,
} from './harness.js';

/** Not a multiple of 4096: the copy must get the unaligned tail right. */
const SIZE = 256 * MiB + 1536;

/** Runs nbdcopy with --progress=3 and SIGKILLs it (by its pid) once it reports `percent`. */
function killAtProgress(args: string[], percent: number): Promise<{ atPercent: number; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('nbdcopy', args, { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
    let output = `$ nbdcopy ${args.join(' ')}\n`;
    let atPercent = -1;
    const timer = setTimeout(() => child.pid !== undefined && process.kill(child.pid, 'SIGKILL'), 60_000);
    child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    (child.stdio[3] as Readable).on('data', (d: Buffer) => {
      for (const m of d.toString().matchAll(/(\d+)\/100/g)) {
        const p = Number(m[1]);
        if (atPercent < 0 && p >= percent) {
          atPercent = p;
          process.kill(child.pid!, 'SIGKILL');
        }
      }
    });
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ atPercent, output: `${output}\n(exit ${code}, signal ${signal}, killed at ${atPercent}%)` });
    });
  });
}

describe.each(EXPORT_KINDS)('nbdcopy against a $name export', (kind) => {
  let dir: string;
  let server: Stackbd;
  let sourceLayout: ImageLayout;
  let fileLayout: ImageLayout;
  let file: string;

  beforeAll(async () => {
    requireTool('nbdcopy');
    dir = await makeTempDir('stackbd-nbdcopy-');
    const rng = new Prng(0xc0c0);
    sourceLayout = randomLayout(rng, SIZE, 12, 1, 2 * MiB);
    // The tail of the disk holds data, up to the last byte.
    sourceLayout.regions[sourceLayout.regions.length - 1] = { offset: SIZE - 5000, length: 5000, seed: 77 };
    fileLayout = randomLayout(rng, SIZE, 12, 1, 2 * MiB);
    const exports = [];
    for (const [name, layout] of [
      ['source', sourceLayout],
      ['into', randomLayout(rng, SIZE, 6, 1, 1 * MiB)],
      ['copy', randomLayout(rng, SIZE, 6, 1, 1 * MiB)],
    ] as const) {
      exports.push({ name, paths: (await prepareExport(kind, dir, name, layout)).paths });
    }
    file = path.join(dir, 'file.raw');
    await writeRawImage(file, fileLayout);
    server = await startStackbd({ exports, logLevel: 'debug' });
  });

  afterAll(async () => {
    await server?.stop();
    if (dir) {
      await releaseExports(dir);
      await removeDir(dir);
    }
  });

  /** Runs nbdcopy and counts the connections the server accepted meanwhile. */
  async function nbdcopy(args: string[]): Promise<{ r: RunResult; connections: number }> {
    const count = (): number => logEntries(server.logs()).filter((e) => e.msg === 'connection').length;
    const before = count();
    const r = await run('nbdcopy', args, { timeoutMs: 90_000 });
    // The server logs a connection when it accepts it; all were accepted before nbdcopy ended.
    return { r, connections: count() - before };
  }

  it('copies the export into a file (same sha256)', async () => {
    const out = path.join(dir, 'out.raw');
    const { r } = await nbdcopy([server.uri('source'), out]);
    expect(r.code, describeRun(r)).toBe(0);
    expect((await fs.stat(out)).size).toBe(SIZE);
    expect(await sha256SparseFile(out)).toBe(sha256Layout(sourceLayout));
    await fs.rm(out);
  });

  it('copies the export into a file over four connections with 64 requests each', async () => {
    const out = path.join(dir, 'out4.raw');
    const { r, connections } = await nbdcopy(['--threads=4', '--connections=4', '--requests=64', server.uri('source'), out]);
    expect(r.code, describeRun(r)).toBe(0);
    expect(connections, describeRun(r)).toBe(4);
    expect(await sha256SparseFile(out)).toBe(sha256Layout(sourceLayout));
    await fs.rm(out);
  });

  it('copies a file into the export over four connections (multi-conn), with --flush', async () => {
    const { r, connections } = await nbdcopy(['--threads=4', '--connections=4', '--flush', file, server.uri('into')]);
    expect(r.code, describeRun(r)).toBe(0);
    expect(connections, describeRun(r)).toBe(4);
    const seen = await sha256Export(server.tcp, 'into');
    expect(seen.size).toBe(SIZE);
    expect(seen.sha256).toBe(sha256Layout(fileLayout));
  });

  it('keeps serving after nbdcopy is killed (SIGKILL) mid-copy with 64 requests in flight, reading and writing', async () => {
    // A dense source (no zero blocks for nbdcopy to skip), so writing takes a while.
    const dense = path.join(dir, 'dense.raw');
    const block = new Prng(0xde).bytes(1 * MiB);
    const handle = await fs.open(dense, 'w');
    for (let i = 0; i < 256; i++) {
      block.writeUInt32LE(i, 0);
      await handle.write(block, 0, block.length, i * MiB);
    }
    await handle.close();
    for (const [source, destination] of [
      [server.uri('source'), 'null:'],
      [dense, server.uri('copy')],
    ]) {
      const before = logEntries(server.logs()).filter((e) => e.msg === 'connection').length;
      const killed = await killAtProgress(['--threads=4', '--connections=4', '--requests=64', '--progress=3', source, destination], 10);
      expect(killed.atPercent, killed.output).toBeGreaterThanOrEqual(10);
      expect(killed.atPercent, killed.output).toBeLessThan(100);
      expect(logEntries(server.logs()).filter((e) => e.msg === 'connection').length - before, killed.output).toBe(4);
      // The server is alive and answers a fresh client.
      expect(() => process.kill(server.pid, 0)).not.toThrow();
      const info = await run('nbdinfo', ['--size', server.uri('source')], { timeoutMs: 20_000 });
      expect(info.stdout.trim(), describeRun(info)).toBe(String(SIZE));
    }
    await fs.rm(dense);
    expect((await sha256Export(server.tcp, 'source')).sha256).toBe(sha256Layout(sourceLayout));
    const errors = logEntries(server.logs()).filter((e) => typeof e.level === 'number' && e.level >= 50);
    expect(errors, JSON.stringify(errors)).toEqual([]);
  });

  it('copies one export into another (both ends on stackbd)', async () => {
    const { r, connections } = await nbdcopy(['--threads=2', '--connections=2', server.uri('source'), server.uri('copy')]);
    expect(r.code, describeRun(r)).toBe(0);
    expect(connections, describeRun(r)).toBe(4);
    expect((await sha256Export(server.tcp, 'copy')).sha256).toBe(sha256Layout(sourceLayout));
  });
});
