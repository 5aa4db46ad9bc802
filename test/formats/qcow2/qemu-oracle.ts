/**
 * The oracle of the qcow2 tests: Debian's qemu-img and qemu-io (qemu-utils) make and write the
 * images, `qemu-img convert -O raw` says what their bytes are and `qemu-img map --output=json`
 * what their allocation is; our layer must agree.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import { promisify } from 'node:util';
import { pushRun, type Run, type RunState } from '../../../src/block/runs.js';
import type { Layer } from '../../../src/formats/layer.js';
import { requireTool } from '../../helpers/require-tool.js';

const exec = promisify(execFile);

export function requireQemu(): void {
  requireTool('qemu-img');
  requireTool('qemu-io');
}

export async function run(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await exec(cmd, args, { maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr ?? e.message}`);
  }
}

export const qemuImg = (...args: string[]): Promise<string> => run('qemu-img', args);

/** Runs qemu-io commands (`write -P 0xab 1M 64k`, `write -z ...`, `discard ...`) on a qcow2 image. */
export async function qemuIo(image: string, commands: readonly string[], format = 'qcow2'): Promise<void> {
  await run('qemu-io', ['-f', format, ...commands.flatMap((c) => ['-c', c]), image]);
}

/** The image's bytes, as qemu-img convert -O raw writes them. */
export async function qemuBytes(image: string, scratch: string): Promise<Buffer> {
  await qemuImg('convert', '-O', 'raw', image, scratch);
  const bytes = await fs.readFile(scratch);
  await fs.rm(scratch);
  return bytes;
}

interface QemuMapEntry {
  start: number;
  length: number;
  present?: boolean;
  zero: boolean;
  data: boolean;
}

/**
 * qemu-img map --output=json as runs: `data` where QEMU says data, `zero` where it says the
 * range is present (allocated somewhere in the chain) but not data, `absent` where nothing in
 * the chain holds it; adjacent equal runs merged.
 */
export async function qemuMap(image: string): Promise<Run[]> {
  const entries = JSON.parse(await qemuImg('map', '--output=json', image)) as QemuMapEntry[];
  const runs: Run[] = [];
  for (const e of entries) {
    const state: RunState = e.data ? 'data' : e.present === false ? 'absent' : 'zero';
    pushRun(runs, e.start, e.length, state);
  }
  return runs;
}

/** The layer's whole map, merged the same way. */
export async function layerMap(layer: Layer): Promise<Run[]> {
  const runs: Run[] = [];
  for (const r of await layer.map(0, layer.size)) pushRun(runs, r.offset, r.length, r.state);
  return runs;
}

/** The layer's bytes, read in pieces of `piece` bytes (so reads cross cluster and table edges). */
export async function layerBytes(layer: Layer, piece = 3 * 65536 + 512): Promise<Buffer> {
  const out = Buffer.alloc(layer.size);
  for (let at = 0; at < layer.size; at += piece) await layer.read(out.subarray(at, Math.min(layer.size, at + piece)), at);
  return out;
}
