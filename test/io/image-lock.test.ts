/**
 * Image locks with and without the native addon: the lock directory beside the image decides
 * alone when the addon is off, and stale entries left by dead processes never block anyone.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ImageInUseError } from '../../src/block/errors.js';
import { openFdFile } from '../../src/io/fd-file.js';
import { currentHolder, lockDirOf, tryLockDir } from '../../src/io/lock-dir.js';
import { loadNative } from '../../src/io/native.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

let dir: string;
beforeAll(async () => {
  dir = await makeTempDir('stackbd-lock-');
});
afterAll(() => removeDir(dir));

async function image(name: string): Promise<string> {
  const file = path.join(dir, name);
  await fs.writeFile(file, randomBytes(4096));
  return file;
}

/** A pid that certainly belongs to no running process: one that ran and exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
  return Number(r.stdout.toString());
}

const savedNative = process.env.STACKBD_NO_NATIVE;
afterEach(() => {
  if (savedNative === undefined) delete process.env.STACKBD_NO_NATIVE;
  else process.env.STACKBD_NO_NATIVE = savedNative;
});

describe.each([
  ['with the native addon', '0'],
  ['without the native addon', '1'],
])('openFdFile locks %s', (_label, noNative) => {
  it('uses the mode asked for', () => {
    process.env.STACKBD_NO_NATIVE = noNative;
    expect(loadNative() === null).toBe(noNative === '1');
  });

  it('one writer at a time; no writer beside readers; readers beside a writer go on unlocked', async () => {
    process.env.STACKBD_NO_NATIVE = noNative;
    const file = await image(`rw-${noNative}.img`);
    const writer = await openFdFile(file);
    await expect(openFdFile(file)).rejects.toBeInstanceOf(ImageInUseError);
    const reader = await openFdFile(file, { readOnly: true });
    await expect(openFdFile(file, { readOnly: true, requireLock: true })).rejects.toThrow(/open for writing/);
    await reader.close();
    await writer.close();
    const r1 = await openFdFile(file, { readOnly: true });
    const r2 = await openFdFile(file, { readOnly: true });
    await expect(openFdFile(file)).rejects.toThrow(/in use/);
    await r1.close();
    await r2.close();
    const again = await openFdFile(file);
    await again.close();
    await expect(fs.stat(lockDirOf(file))).rejects.toThrow();
  });

  it('--force (create with overwrite) never empties a file someone else holds', async () => {
    process.env.STACKBD_NO_NATIVE = noNative;
    const file = await image(`force-${noNative}.img`);
    const before = await fs.readFile(file);
    const holder = await openFdFile(file, { readOnly: true });
    await expect(openFdFile(file, { create: true, overwrite: true })).rejects.toBeInstanceOf(ImageInUseError);
    expect((await fs.readFile(file)).equals(before)).toBe(true);
    await holder.close();
    const replaced = await openFdFile(file, { create: true, overwrite: true });
    expect(await replaced.size()).toBe(0);
    await replaced.close();
  });
});

describe('the lock directory', () => {
  it('removes the entries of dead processes and of an earlier boot, and keeps those of live ones', async () => {
    const file = await image('stale.img');
    const locks = lockDirOf(file);
    await fs.mkdir(locks);
    await fs.writeFile(path.join(locks, 'w-dead'), JSON.stringify({ ...currentHolder('exclusive'), pid: deadPid(), started: '' }));
    await fs.writeFile(path.join(locks, 'w-reboot'), JSON.stringify({ ...currentHolder('exclusive'), boot: 'an-earlier-boot' }));
    await fs.writeFile(path.join(locks, 'w-reused'), JSON.stringify({ ...currentHolder('exclusive'), started: '1' }));
    const attempt = await tryLockDir(file, 'exclusive');
    expect(attempt.kind).toBe('locked');
    if (attempt.kind === 'locked') await attempt.release();
    await expect(fs.stat(locks)).rejects.toThrow();
  });

  it('counts an entry from another host as live, and names it', async () => {
    const file = await image('other-host.img');
    const locks = lockDirOf(file);
    await fs.mkdir(locks);
    const entry = path.join(locks, 'r-remote');
    await fs.writeFile(entry, JSON.stringify({ host: `not-${os.hostname()}`, pid: 1, boot: '', started: '', mode: 'shared' }));
    const attempt = await tryLockDir(file, 'exclusive');
    expect(attempt).toMatchObject({ kind: 'busy', entries: [entry] });
    process.env.STACKBD_NO_NATIVE = '1';
    await expect(openFdFile(file)).rejects.toThrow(new RegExp(`reader pid 1 on not-${os.hostname()}.*${entry}`));
    await fs.rm(locks, { recursive: true });
  });

  it('without a lock directory, a writer needs flock; a reader needs nothing', async () => {
    const file = await image('no-dir.img');
    // A file where the directory would go: it cannot be made.
    await fs.writeFile(lockDirOf(file), '');
    process.env.STACKBD_NO_NATIVE = '1';
    await expect(openFdFile(file)).rejects.toThrow(/cannot be locked for writing/);
    await (await openFdFile(file, { readOnly: true })).close();
    process.env.STACKBD_NO_NATIVE = '0';
    expect(loadNative(), 'the native addon is built by npm install (it needs make and g++)').not.toBeNull();
    await (await openFdFile(file)).close();
  });
});
