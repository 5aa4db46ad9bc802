/**
 * Nothing a user types loses data (issue 10, items 1-6): every test takes checksums of the
 * images a command must not touch and compares them afterwards. The lock tests run twice:
 * with the native addon (flock and the lock directory) and without it (STACKBD_NO_NATIVE=1:
 * the lock directory alone), as on macOS or after an install without a compiler.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAsif } from '../../src/formats/asif/index.js';
import { NbdClient, NbdRequestError } from '../../src/nbd/client.js';
import { runStackbd, type CommandResult } from '../helpers/run-command.js';
import { spawnServer } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const sha = async (file: string): Promise<string> => createHash('sha256').update(await fs.readFile(file)).digest('hex');

let dir: string;
const p = (name: string): string => path.join(dir, name);

beforeAll(async () => {
  dir = await makeTempDir('stackbd-safety-');
});
afterAll(() => removeDir(dir));

/** A RAW base with data at its start and an ASIF overlay on it, made through the CLI. */
async function makeStack(prefix: string, env?: NodeJS.ProcessEnv): Promise<{ base: string; overlay: string }> {
  const base = p(`${prefix}-base.raw`);
  const overlay = p(`${prefix}-vm.asif`);
  await fs.writeFile(base, Buffer.concat([randomBytes(MiB), Buffer.alloc(3 * MiB)]));
  const r = await runStackbd(['append', base, '--new', overlay], undefined, env);
  expect(r.code, r.stderr).toBe(0);
  return { base, overlay };
}

describe.each([
  ['with the native addon', {}],
  ['without the native addon', { STACKBD_NO_NATIVE: '1' }],
] as const)('locks %s', (_label, env) => {
  const tag = Object.keys(env).length > 0 ? 'nonative' : 'native';

  it('create/convert/append --force refuse an image a server has open, and leave it as it was', async () => {
    const { base, overlay } = await makeStack(`force-${tag}`, env);
    const server = await spawnServer({ args: ['--export', `vm=${base},${overlay}`], env });
    try {
      const c = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'vm' });
      await c.pwrite(Buffer.alloc(64 * 1024, 0x5a), 0);
      await c.flush();
      const before = await sha(overlay);
      const attempts: CommandResult[] = [
        await runStackbd(['create', overlay, '--size', '64M', '--force'], undefined, env),
        await runStackbd(['convert', base, '-O', overlay, '--force'], undefined, env),
        await runStackbd(['append', base, '--new', overlay, '--force'], undefined, env),
      ];
      for (const r of attempts) {
        expect(r.code, r.stderr).toBe(1);
        expect(r.stderr).toMatch(/in use/);
        expect(r.stderr.trim().split('\n')).toHaveLength(1);
      }
      expect(await sha(overlay)).toBe(before);
      // The server still serves what it had.
      expect((await c.pread(0, 64 * 1024)).equals(Buffer.alloc(64 * 1024, 0x5a))).toBe(true);
      await c.disconnect();
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });

  it('a second writable server of one overlay is refused; a reader of a written image goes on', async () => {
    const { base, overlay } = await makeStack(`two-${tag}`, env);
    const first = await spawnServer({ args: ['--export', `vm=${base},${overlay}`], env });
    try {
      const second = await runStackbd(['serve', '--listen', '127.0.0.1:0', '--export', `vm=${base},${overlay}`], 20_000, env);
      expect(second.code).toBe(1);
      expect(second.stderr).toContain(overlay);
      expect(second.stderr).toMatch(/in use/);
      // Inspecting what is being served is fine.
      expect((await runStackbd(['info', base, overlay], undefined, env)).code).toBe(0);
      // But a new layer on it is not: the child would record a parent that may still change.
      const child = await runStackbd(['append', base, overlay, '--new', p(`two-${tag}-child.asif`)], undefined, env);
      expect(child.code).toBe(1);
      expect(child.stderr).toMatch(/open for writing/);
    } finally {
      expect(await first.stop()).toBe(0);
    }
    // Released on exit: the lock directory is gone and the image opens for writing again.
    await expect(fs.stat(path.join(dir, `.${path.basename(overlay)}.stackbd-locks`))).rejects.toThrow();
    const again = await spawnServer({ args: ['--export', `vm=${base},${overlay}`], env });
    expect(await again.stop()).toBe(0);
  });

  it('a killed server leaves no lock that stops the next one', async () => {
    const { base, overlay } = await makeStack(`kill-${tag}`, env);
    const first = await spawnServer({ args: ['--export', `vm=${base},${overlay}`], env });
    expect(await first.stop('SIGKILL')).toBeNull();
    const second = await spawnServer({ args: ['--export', `vm=${base},${overlay}`], env });
    expect(await second.stop()).toBe(0);
  });
});

describe('outputs that are also inputs', () => {
  it('convert and append refuse to write over one of their own inputs, even with --force', async () => {
    const { base, overlay } = await makeStack('self');
    const before = [await sha(base), await sha(overlay)];
    const sameName = await runStackbd(['convert', base, overlay, '-O', overlay, '--force']);
    const otherName = await runStackbd(['convert', base, overlay, '-O', path.join(dir, '.', path.basename(base)), '--force']);
    const appendSelf = await runStackbd(['append', base, overlay, '--new', overlay, '--force']);
    for (const r of [sameName, otherName, appendSelf]) {
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toMatch(/input|already a layer/);
    }
    expect([await sha(base), await sha(overlay)]).toEqual(before);
    const twice = await runStackbd(['info', base, base]);
    expect(twice.code).toBe(1);
    expect(twice.stderr).toMatch(/listed twice/);
  });
});

describe('formats are never guessed into RAW', () => {
  async function damagedAsif(name: string): Promise<{ file: string; hash: string }> {
    const file = p(name);
    await createAsif(file, { blockCount: 8192 });
    const handle = await fs.open(file, 'r+');
    await handle.write(Buffer.alloc(16), 0, 16, 0);
    await handle.close();
    return { file, hash: await sha(file) };
  }

  it('an ASIF whose header is damaged is refused by serve, info and check, naming both formats', async () => {
    const { file, hash } = await damagedAsif('damaged.asif');
    for (const args of [['serve', '--listen', '127.0.0.1:0', '--export', `vm=${file}`], ['info', file], ['map', file]]) {
      const r = await runStackbd(args, 20_000);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(1);
      expect(r.stderr).toMatch(/the name says ASIF.*RAW/);
    }
    // check calls it what it is: an ASIF whose header is damaged.
    const check = await runStackbd(['check', file]);
    expect(check.code).toBe(2);
    expect(check.stdout).toMatch(/the name says ASIF.*RAW[^]*CORRUPT/);
    expect(await sha(file)).toBe(hash);
    // A user who names the format is believed.
    const named = await runStackbd(['info', '-f', 'raw', file]);
    expect(named.code, named.stderr).toBe(0);
    expect((await runStackbd(['info', `raw:${file}`])).code).toBe(0);
  });

  it('a probed RAW disk never gets another format in its first sector; a named one may', async () => {
    const disk = p('probed.img');
    await fs.writeFile(disk, Buffer.alloc(4 * MiB));
    const named = p('probed2.img');
    await fs.writeFile(named, Buffer.alloc(4 * MiB));
    const live = await spawnServer({ args: ['--export', `probed=${disk}`, '--export', `named=raw:${named}`] });
    try {
      const magic = Buffer.alloc(512);
      magic.write('shdw', 0, 'latin1');
      const probed = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: live.port }, { exportName: 'probed' });
      await expect(probed.pwrite(magic, 0)).rejects.toBeInstanceOf(NbdRequestError);
      // Other writes, and the first sector without a magic, are fine.
      await probed.pwrite(Buffer.alloc(512, 7), 0);
      await probed.disconnect();
      const vouched = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: live.port }, { exportName: 'named' });
      await vouched.pwrite(magic, 0);
      await vouched.disconnect();
    } finally {
      expect(await live.stop()).toBe(0);
    }
    expect((await fs.readFile(disk)).subarray(0, 512).equals(Buffer.alloc(512, 7))).toBe(true);
    expect((await fs.readFile(named)).subarray(0, 4).toString('latin1')).toBe('shdw');
  });
});

describe('RAW bases are tied to their overlays', () => {
  it('an overlay is refused on another RAW file, on a resized one and on a rewritten one', async () => {
    const { base, overlay } = await makeStack('tied');
    const other = p('tied-other.raw');
    await fs.writeFile(other, Buffer.alloc(8 * MiB));
    const wrong = await runStackbd(['info', other, overlay]);
    expect(wrong.code).toBe(1);
    expect(wrong.stdout).toMatch(/chain: INVALID: .*size in bytes was 4194304, now 8388608/);
    const json = JSON.parse((await runStackbd(['info', other, overlay, '--json'])).stdout) as { chain: { valid: boolean } };
    expect(json.chain.valid).toBe(false);
    expect((await runStackbd(['info', base, overlay])).code).toBe(0);
    // Another program writes the base in place: same size, same inode, new content.
    const handle = await fs.open(base, 'r+');
    await handle.write(Buffer.alloc(512, 1), 0, 512, 0);
    await handle.close();
    const changed = await runStackbd(['info', base, overlay]);
    expect(changed.code).toBe(1);
    expect(changed.stdout).toMatch(/modification time was/);
    const served = await runStackbd(['serve', '--listen', '127.0.0.1:0', '--export', `vm=${base},${overlay}`], 20_000);
    expect(served.code).toBe(1);
    expect(served.stderr).toMatch(/IncompatibleStacking|changed since/);
  });

  it('commit into a base that has other children is refused unless --force, and names them', async () => {
    const { base, overlay } = await makeStack('siblings');
    const server = await spawnServer({ args: ['--export', `vm=${base},${overlay}`] });
    try {
      const c = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'vm' });
      await c.pwrite(Buffer.alloc(MiB, 0x44), MiB);
      await c.disconnect();
    } finally {
      await server.stop();
    }
    const sibling = p('siblings-vm2.asif');
    expect((await runStackbd(['append', base, '--new', sibling])).code).toBe(0);
    const before = await sha(base);
    const refused = await runStackbd(['commit', base, overlay]);
    expect(refused.code, refused.stdout + refused.stderr).toBe(1);
    expect(refused.stderr).toContain(sibling);
    expect(await sha(base)).toBe(before);
    expect((await runStackbd(['info', base, sibling])).code).toBe(0);
    const forced = await runStackbd(['commit', base, overlay, '--force']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stderr).toContain(sibling);
    // The sibling would now read a changed base: refused, not mixed.
    const stale = await runStackbd(['info', base, sibling]);
    expect(stale.code).toBe(1);
    expect(stale.stdout).toMatch(/modification time was/);
  });

  it('rebase --unsafe re-points an overlay at a copied base; rebase --from keeps what it reads', async () => {
    const { base, overlay } = await makeStack('rebase');
    const server = await spawnServer({ args: ['--export', `vm=${base},${overlay}`] });
    try {
      const c = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'vm' });
      await c.pwrite(Buffer.alloc(MiB, 0x33), 2 * MiB);
      await c.disconnect();
    } finally {
      await server.stop();
    }
    const flat = p('rebase-flat.raw');
    expect((await runStackbd(['convert', base, overlay, '-O', flat])).code).toBe(0);
    const expected = await sha(flat);
    // A plain copy: a new inode and modification time, the same bytes.
    const copy = p('rebase-copy.raw');
    await fs.writeFile(copy, await fs.readFile(base));
    expect((await runStackbd(['info', copy, overlay])).code).toBe(1);
    const overlayUUID = (JSON.parse((await runStackbd(['info', overlay, '--json'])).stdout) as { layers: Array<{ layerUUID: string }> }).layers[0].layerUUID;
    const unsafe = await runStackbd(['rebase', copy, overlay, '--unsafe']);
    expect(unsafe.code, unsafe.stderr).toBe(0);
    expect((await runStackbd(['info', copy, overlay])).code).toBe(0);
    expect((await runStackbd(['convert', copy, overlay, '-O', p('rebase-flat2.raw')])).code).toBe(0);
    expect(await sha(p('rebase-flat2.raw'))).toBe(expected);
    // Safe: onto a base with different content; the overlay takes what differs.
    const fresh = p('rebase-zero.raw');
    await fs.writeFile(fresh, Buffer.alloc(4 * MiB, 0xee));
    const safe = await runStackbd(['rebase', fresh, overlay, '--from', copy]);
    expect(safe.code, safe.stderr).toBe(0);
    expect((await runStackbd(['convert', fresh, overlay, '-O', p('rebase-flat3.raw')])).code).toBe(0);
    expect(await sha(p('rebase-flat3.raw'))).toBe(expected);
    // The overlay read the same all along, so its own UUID (which its children record) did not change.
    const after = (JSON.parse((await runStackbd(['info', overlay, '--json'])).stdout) as { layers: Array<{ layerUUID: string }> }).layers[0].layerUUID;
    expect(after).toBe(overlayUUID);
    expect((await runStackbd(['check', overlay])).code).not.toBe(2);
  });

  it('an overlay that recorded nothing of its RAW base (as Apple makes them) opens with a warning', async () => {
    const base = p('apple-base.raw');
    await fs.writeFile(base, Buffer.alloc(4 * MiB));
    const overlay = p('apple-vm.asif');
    await createAsif(overlay, { blockCount: 8192, layerType: 'overlay' });
    const r = await runStackbd(['info', base, overlay]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: .*records nothing that identifies its base/);
  });
});

describe('resizing', () => {
  it('truncate to a smaller size needs --shrink; a layer with children needs --force', async () => {
    const { base, overlay } = await makeStack('shrink');
    const before = await sha(overlay);
    const r = await runStackbd(['truncate', base, overlay, '--size', '2M']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--shrink/);
    expect(await sha(overlay)).toBe(before);
    expect((await runStackbd(['truncate', base, overlay, '--size', '2M', '--shrink'])).code).toBe(0);
    const child = p('shrink-child.asif');
    expect((await runStackbd(['append', base, overlay, '--new', child])).code).toBe(0);
    const frozen = await sha(overlay);
    const withChild = await runStackbd(['truncate', base, overlay, '--size', '8M']);
    expect(withChild.code).toBe(1);
    expect(withChild.stderr).toContain(child);
    expect(await sha(overlay)).toBe(frozen);
  });
});

describe('listening addresses', () => {
  it.each([[''], ['*:10809'], ['0.0.0.0'], ['[]:10809'], ['[::]']])('refuses --listen %j', async (address) => {
    const r = await runStackbd(['serve', '--listen', address, '--export', p('none.raw')]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});
