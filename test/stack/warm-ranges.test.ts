/** The ranges files of `stackbd warm --ranges`: recorded lines and map JSON, and clear errors. */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatRanges, parseRanges, RangesFileError, readRangesFile } from '../../src/stack/warm-ranges.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

let dir: string;
beforeAll(async () => {
  dir = await makeTempDir('stackbd-ranges-');
});
afterAll(() => removeDir(dir));

describe('ranges files', () => {
  it('reads OFFSET LENGTH lines, decimal or 0x hex, with comments and blank lines', () => {
    const text = '# recorded\n0 1048576\n\n  0x200000   0x100000  # two MiB in\n4096 0\n';
    expect(parseRanges(text, 'r.txt')).toEqual([
      { offset: 0, length: 1048576 },
      { offset: 2097152, length: 1048576 },
    ]);
  });

  it('reads the JSON of stackbd map --json and qemu-img map, leaving out what holds no data', () => {
    const stackbd = JSON.stringify([
      { offset: 0, length: 4096, state: 'data', depth: 1, file: 'a', fileOffset: 0 },
      { offset: 4096, length: 8192, state: 'zero', depth: 1, file: 'a', fileOffset: null },
      { offset: 12288, length: 100, state: 'absent', depth: 0, file: null, fileOffset: null },
    ]);
    expect(parseRanges(stackbd, 'm.json')).toEqual([{ offset: 0, length: 4096 }]);
    const qemu = JSON.stringify([
      { start: 0, length: 65536, depth: 0, present: true, zero: false, data: true, offset: 0 },
      { start: 65536, length: 65536, depth: 0, present: true, zero: true, data: false },
    ]);
    expect(parseRanges(qemu, 'q.json')).toEqual([{ offset: 0, length: 65536 }]);
  });

  it('names the file and the line of a mistake', () => {
    expect(() => parseRanges('0 4096\n12 potatoes\n', 'bad.txt')).toThrow(new RangesFileError('bad.txt: line 2: expected "OFFSET LENGTH" (decimal or 0x hex), not "12 potatoes"'));
    expect(() => parseRanges('1 2 3\n', 'bad.txt')).toThrow(/line 1/);
    expect(() => parseRanges('-5 10\n', 'bad.txt')).toThrow(/line 1/);
    expect(() => parseRanges('99999999999999999999 1\n', 'bad.txt')).toThrow(/line 1/);
    expect(() => parseRanges('[{"offset": 1}]', 'bad.json')).toThrow(/bad.json: entry 0/);
    expect(() => parseRanges('[{"offset": 1, ', 'bad.json')).toThrow(/bad.json: not valid JSON/);
    expect(() => parseRanges('{"offset": 1, "length": 2}', 'bad.json')).toThrow(/a JSON list/);
  });

  it('reads a file, refuses one that is not a regular file, and writes what it reads', async () => {
    const file = path.join(dir, 'vm.ranges');
    await fs.writeFile(file, formatRanges([{ offset: 0, length: 512 }, { offset: 1 << 20, length: 2 << 20 }], ['a comment']));
    expect(await fs.readFile(file, 'utf8')).toBe('# a comment\n0 512\n1048576 2097152\n');
    expect(await readRangesFile(file)).toEqual([
      { offset: 0, length: 512 },
      { offset: 1 << 20, length: 2 << 20 },
    ]);
    await expect(readRangesFile(dir)).rejects.toThrow(/not a regular file/);
    await expect(readRangesFile(path.join(dir, 'missing'))).rejects.toThrow(/missing: cannot read it \(ENOENT\)/);
  });
});
