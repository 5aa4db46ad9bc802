/** A small sparse disk image with a known pattern, and what nbdinfo says of an upstream's map. */
import fs from 'node:fs/promises';
import { pushRun, type Run } from '../../../src/block/runs.js';
import { runCommand } from '../../helpers/run-command.js';

export const DISK_SIZE = 4 * 1024 * 1024;

/** Data ranges of the test disk; the rest is holes. */
export const DATA_RANGES: ReadonlyArray<[number, number]> = [
  [0, 64 * 1024],
  [1024 * 1024, 128 * 1024],
  [3 * 1024 * 1024 + 4096, 8192],
];

export function patternByte(offset: number, salt: number): number {
  return ((offset >> 9) * 31 + (offset & 511) + salt) & 0xff || 1;
}

/** Writes a sparse file of `size` bytes with the data ranges filled with a pattern (never zero bytes); returns its content. */
export async function makeDisk(file: string, salt = 0, size = DISK_SIZE): Promise<Buffer> {
  const content = Buffer.alloc(size);
  const fh = await fs.open(file, 'w');
  try {
    await fh.truncate(size);
    for (const [start, length] of DATA_RANGES) {
      if (start + length > size) continue;
      const part = content.subarray(start, start + length);
      for (let i = 0; i < length; i++) part[i] = patternByte(start + i, salt);
      await fh.write(part, 0, length, start);
    }
  } finally {
    await fh.close();
  }
  return content;
}

/** `nbdinfo --map` of a URI as runs: the ZERO bit makes a range 'zero', the rest is 'data'. */
export async function nbdinfoMap(uri: string): Promise<Run[]> {
  const r = await runCommand('nbdinfo', ['--map', '--json', uri]);
  if (r.code !== 0) throw new Error(`nbdinfo --map ${uri} failed: ${r.stderr}`);
  const entries = JSON.parse(r.stdout) as Array<{ offset: number; length: number; type: number }>;
  const runs: Run[] = [];
  for (const e of entries) pushRun(runs, e.offset, e.length, e.type & 2 ? 'zero' : 'data');
  return runs;
}
