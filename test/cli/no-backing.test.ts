/**
 * `--no-backing` on every command that opens a base (info, map, check, convert, append, serve),
 * the config file's `"noBacking": true` on the base's layer object, and DiskImage.open's
 * `noBacking` option: a qcow2 image that names a backing file is refused, naming it, and no
 * other file is opened; a qcow2 image without one opens as before; without the option the
 * chain is followed.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IncompatibleStackingError } from '../../src/block/errors.js';
import { NbdClient } from '../../src/nbd/client.js';
import { DiskImage } from '../../src/stack/disk-image.js';
import { qemuImg, qemuIo, requireQemu } from '../formats/qcow2/qemu-oracle.js';
import { runStackbd } from '../helpers/run-command.js';
import { spawnServer } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const REFUSED = /top\.qcow2: the image has a backing file \(base\.qcow2\) and backing files were refused \(--no-backing\)/;

describe('--no-backing', () => {
  let dir: string;
  const p = (name: string): string => path.join(dir, name);

  beforeAll(async () => {
    requireQemu();
    dir = await makeTempDir('stackbd-no-backing-');
    await qemuImg('create', '-f', 'qcow2', p('base.qcow2'), String(4 * MiB));
    await qemuIo(p('base.qcow2'), ['write -P 0x11 0 1M']);
    await qemuImg('create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', p('top.qcow2'));
    await qemuIo(p('top.qcow2'), ['write -P 0x22 2M 64k']);
  });
  afterAll(() => removeDir(dir));

  async function refused(args: string[]): Promise<void> {
    const r = await runStackbd(args, 30_000);
    expect(r.code, `stackbd ${args.join(' ')}\n${r.stdout}${r.stderr}`).toBe(1);
    expect(r.stderr).toMatch(REFUSED);
  }

  async function ok(args: string[]): Promise<string> {
    const r = await runStackbd(args, 30_000);
    expect(r.code, `stackbd ${args.join(' ')}\n${r.stdout}${r.stderr}`).toBe(0);
    return r.stdout;
  }

  it('info and map refuse an image with a backing file; without it they show the chain', async () => {
    await refused(['info', p('top.qcow2'), '--no-backing']);
    await refused(['map', p('top.qcow2'), '--no-backing', '--json']);
    expect(await ok(['info', p('top.qcow2')])).toMatch(/backing chain 1:\s+name=base\.qcow2/);
    const map = JSON.parse(await ok(['map', p('top.qcow2'), '--json'])) as Array<{ offset: number; state: string }>;
    // The backing file's first MiB shows through the top.
    expect(map[0]).toMatchObject({ offset: 0, state: 'data' });
    // An image without a backing file is unaffected.
    expect(await ok(['info', p('base.qcow2'), '--no-backing'])).toContain('format');
  });

  it('check cannot complete (exit 1) on an image whose backing file is refused', async () => {
    await refused(['check', p('top.qcow2'), '--no-backing']);
    expect(await ok(['check', p('top.qcow2')])).toContain('opens and maps cleanly');
    expect(await ok(['check', p('base.qcow2'), '--no-backing'])).toContain('opens and maps cleanly');
  });

  it('convert and append refuse it and write nothing', async () => {
    await refused(['convert', p('top.qcow2'), '-O', p('flat.raw'), '--no-backing']);
    await expect(fs.stat(p('flat.raw'))).rejects.toMatchObject({ code: 'ENOENT' });
    await refused(['append', p('top.qcow2'), '--new', p('o.asif'), '--no-backing']);
    await expect(fs.stat(p('o.asif'))).rejects.toMatchObject({ code: 'ENOENT' });
    await ok(['convert', p('base.qcow2'), '-O', p('base.raw'), '--no-backing']);
    expect((await fs.readFile(p('base.raw'))).subarray(0, MiB).every((b) => b === 0x11)).toBe(true);
  });

  it('serve refuses the export at start (exit 1), from --export or from a config file base object', async () => {
    await refused(['serve', '--listen', '127.0.0.1:0', '--export', `vm=${p('top.qcow2')}`, '--no-backing']);
    const config = p('config.json');
    await fs.writeFile(config, JSON.stringify({ exports: [{ name: 'vm', layers: [{ path: 'top.qcow2', noBacking: true }] }] }));
    await refused(['serve', '--listen', '127.0.0.1:0', '--config', config]);
    // Without it, the same config serves the chain.
    await fs.writeFile(config, JSON.stringify({ exports: [{ name: 'vm', layers: [{ path: 'top.qcow2', noBacking: false }] }] }));
    const server = await spawnServer({ args: ['--config', config] });
    try {
      const client = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'vm' });
      expect((await client.pread(0, 512)).every((b) => b === 0x11)).toBe(true);
      await client.disconnect();
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });

  it('DiskImage.open refuses it with noBacking (as an option, or in a layer spec)', async () => {
    await expect(DiskImage.open(p('top.qcow2'), { noBacking: true })).rejects.toThrow(IncompatibleStackingError);
    await expect(DiskImage.open({ path: p('top.qcow2'), noBacking: true })).rejects.toThrow(REFUSED);
    // A spec that says false wins over the option's default.
    const image = await DiskImage.open({ path: p('top.qcow2'), noBacking: false }, { noBacking: true });
    try {
      const buf = Buffer.alloc(512);
      await image.stack.read(buf, 0);
      expect(buf.every((b) => b === 0x11)).toBe(true);
    } finally {
      await image.close();
    }
    const alone = await DiskImage.open(p('base.qcow2'), { noBacking: true });
    await alone.close();
  });
});
