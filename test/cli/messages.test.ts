/**
 * Exit statuses and messages (issue 10, items 11 and 12): 0 done, 1 failed, 2 usage; check as
 * qemu-img's; one line on stderr that names the file and the problem; nothing left behind by a
 * create that failed.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runStackbd, type CommandResult } from '../helpers/run-command.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

let dir: string;
const p = (name: string): string => path.join(dir, name);
beforeAll(async () => {
  dir = await makeTempDir('stackbd-messages-');
});
afterAll(() => removeDir(dir));

function oneLine(r: CommandResult, code: number, pattern: RegExp): void {
  expect(r.code, r.stderr).toBe(code);
  const lines = r.stderr.trim().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^stackbd: /);
  expect(lines[0]).toMatch(pattern);
}

describe('exit statuses', () => {
  it('--help lists them', async () => {
    const r = await runStackbd(['--help']);
    expect(r.stdout).toMatch(/0 done; 1 failed.*2 usage mistake/);
    expect(r.stdout).toMatch(/check: 0 clean; 1 the check could not be completed; 2 corruption found; 3 leaked chunks only/);
  });

  it('check of a missing file could not be completed (1), not "leaks only"', async () => {
    oneLine(await runStackbd(['check', p('missing.asif')]), 1, /missing\.asif: no such file/);
  });

  it('an unknown command is a usage mistake that suggests the closest one', async () => {
    oneLine(await runStackbd(['serv', '--export', 'x.raw']), 2, /unknown command "serv". Did you mean serve\?/);
    oneLine(await runStackbd(['info', 'x', '--no-such-option']), 2, /Unknown argument/);
  });
});

describe('messages name the file and the problem in one line', () => {
  it('a directory given as an image', async () => {
    oneLine(await runStackbd(['info', dir]), 1, new RegExp(`${dir}: is a directory, not a disk image`));
  });

  it('--size too large says the maximum; --size 0 speaks of bytes', async () => {
    oneLine(await runStackbd(['create', p('big.asif'), '--size', '100P']), 2, /larger than the largest size stackbd handles, 9007199254740991 bytes/);
    oneLine(await runStackbd(['create', p('zero.asif'), '--size', '0']), 2, /--size 0 is 0 bytes: an image holds at least one 512-byte block/);
    oneLine(await runStackbd(['create', p('huge.asif'), '--size', '7P']), 1, /huge\.asif: .*is not a size ASIF can hold: 1 to \d+ blocks \(\d+ bytes\)/);
    await expect(fs.stat(p('huge.asif'))).rejects.toThrow();
  });

  it('a RAW file larger than the file system allows fails and leaves nothing behind', async () => {
    oneLine(await runStackbd(['create', p('huge.raw'), '--size', '7P', '--format', 'raw']), 1, /huge\.raw: the file system cannot hold a file of \d+ bytes \(EFBIG\)/);
    await expect(fs.stat(p('huge.raw'))).rejects.toThrow();
  });

  it('probe --timeout that is not a number', async () => {
    oneLine(await runStackbd(['probe', 'nbd://127.0.0.1:1', '--timeout', 'abc']), 2, /--timeout "abc" is not a number of seconds above 0/);
  });

  it('convert says what it wrote; -p forces the progress bar on, -q off', async () => {
    const base = p('conv.raw');
    await fs.writeFile(base, Buffer.concat([Buffer.alloc(1024 * 1024, 9), Buffer.alloc(3 * 1024 * 1024)]));
    const quiet = await runStackbd(['convert', base, '-O', p('conv-out.asif'), '-q']);
    expect(quiet.code, quiet.stderr).toBe(0);
    expect(quiet.stdout).toMatch(/wrote .*conv-out\.asif: ASIF, 4 MiB \(4194304 bytes\), 1 MiB of data, the rest holes/);
    expect(quiet.stderr).toBe('');
    const loud = await runStackbd(['convert', base, '-O', p('conv-out.raw'), '-p']);
    expect(loud.code, loud.stderr).toBe(0);
    expect(loud.stderr).toMatch(/convert \[.*\] 100%/);
  });

  it('convert refuses an output name that promises a format it cannot write', async () => {
    const base = p('conv2.raw');
    await fs.writeFile(base, Buffer.alloc(1024 * 1024));
    oneLine(await runStackbd(['convert', base, '-O', p('out.qcow2')]), 2, /cannot write qcow2 images/);
  });
});
