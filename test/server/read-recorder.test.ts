/** serve --record-reads: one bit per MiB of an export, written as merged ranges, kept across runs. */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReadRecorder } from '../../src/server/read-recorder.js';
import { readRangesFile } from '../../src/stack/warm-ranges.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
let dir: string;
beforeAll(async () => {
  dir = await makeTempDir('stackbd-recorder-');
});
afterAll(() => removeDir(dir));

describe('ReadRecorder', () => {
  it('records reads at MiB granularity, merged, and writes them only when something changed', async () => {
    const file = path.join(dir, 'vm.ranges');
    const rec = new ReadRecorder(file, 'vm', 64 * MiB);
    rec.note(100, 4096);
    rec.note(MiB - 1, 2);
    rec.note(10 * MiB + 5, 3 * MiB);
    rec.note(63 * MiB, MiB);
    rec.note(5 * MiB, 0);
    expect(rec.ranges()).toEqual([
      { offset: 0, length: 2 * MiB },
      { offset: 10 * MiB, length: 4 * MiB },
      { offset: 63 * MiB, length: MiB },
    ]);
    await rec.save();
    expect(await readRangesFile(file)).toEqual(rec.ranges());
    expect(await fs.readFile(file, 'utf8')).toMatch(/^# reads of export "vm"/);
    // Nothing new: the file is left as it is.
    await fs.writeFile(file, '0 512\n');
    await rec.save();
    expect(await fs.readFile(file, 'utf8')).toBe('0 512\n');
  });

  it('keeps what an earlier run recorded (within the export), and starts afresh from a file it cannot read', async () => {
    const file = path.join(dir, 'again.ranges');
    await fs.writeFile(file, '# earlier\n0 1048576\n33554432 1048576\n1099511627776 1048576\n');
    const rec = new ReadRecorder(file, 'again', 40 * MiB);
    await rec.load();
    rec.note(2 * MiB, 1);
    expect(rec.ranges()).toEqual([
      { offset: 0, length: MiB },
      { offset: 2 * MiB, length: MiB },
      { offset: 32 * MiB, length: MiB },
    ]);
    await fs.writeFile(file, 'not ranges\n');
    const fresh = new ReadRecorder(file, 'again', 40 * MiB);
    await fresh.load();
    expect(fresh.ranges()).toEqual([]);
  });
});
