/**
 * A qcow2 chain as the read-only base of a served stack (the real `stackbd` CLI and server):
 * `append` puts an ASIF overlay on it, `info` shows the chain, the export equals the qcow2 for
 * `qemu-img compare` and its map for `nbdinfo --map`, writes land in the overlay only; a qcow2
 * served alone is a read-only export.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdErrno } from '../../../src/block/errors.js';
import { NbdClient, NbdRequestError } from '../../../src/nbd/client.js';
import { requireTool } from '../../helpers/require-tool.js';
import { runCommand, runStackbd } from '../../helpers/run-command.js';
import { spawnServer } from '../../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../../helpers/tmp.js';
import { qemuBytes, qemuImg, qemuIo, qemuMap, requireQemu } from './qemu-oracle.js';

const MiB = 1024 * 1024;

async function ok(args: string[]): Promise<string> {
  const r = await runStackbd(args);
  expect(r.code, `stackbd ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

const sha = async (file: string): Promise<string> => createHash('sha256').update(await fs.readFile(file)).digest('hex');

interface NbdinfoExtent {
  offset: number;
  length: number;
  type: number;
}

/** data (type 0) or not, merged. */
function dataRuns(list: ReadonlyArray<{ offset: number; length: number; data: boolean }>): Array<[number, number, boolean]> {
  const out: Array<[number, number, boolean]> = [];
  for (const e of list) {
    const last = out[out.length - 1];
    if (last && last[2] === e.data && last[0] + last[1] === e.offset) last[1] += e.length;
    else out.push([e.offset, e.length, e.data]);
  }
  return out;
}

describe('a qcow2 chain as the base of a served stack', () => {
  let dir: string;
  const p = (name: string): string => path.join(dir, name);

  beforeAll(async () => {
    requireQemu();
    requireTool('nbdinfo');
    dir = await makeTempDir('stackbd-qcow2-serve-');
    await qemuImg('create', '-f', 'qcow2', p('base.qcow2'), String(16 * MiB));
    await qemuIo(p('base.qcow2'), ['write -P 0x01 0 3M', 'write -P 0x02 8M 2M', 'write -z 12M 1M']);
    await qemuImg('create', '-f', 'qcow2', '-o', 'compression_type=zstd', '-b', 'base.qcow2', '-F', 'qcow2', p('top.qcow2'));
    await qemuIo(p('top.qcow2'), ['write -P 0x03 1M 64k', 'write -z 2M 256k', 'write -P 0x04 14M 1M', 'discard 9M 64k']);
  });
  afterAll(() => removeDir(dir));

  it('append, info, serve: equal to the qcow2 for qemu-img compare and nbdinfo --map; writes go to the overlay', async () => {
    const before = [await sha(p('base.qcow2')), await sha(p('top.qcow2'))];
    await ok(['append', p('top.qcow2'), '--new', p('o.asif')]);
    const text = await ok(['info', p('top.qcow2'), p('o.asif')]);
    expect(text).toContain('chain: valid');
    expect(text).toMatch(/backing chain 1:\s+name=base\.qcow2 .*format=qcow2/);
    expect(text).toMatch(/compression type:\s+zstd/);
    const json = JSON.parse(await ok(['info', p('top.qcow2'), '--json'])) as { layers: Array<{ format: string; details: Record<string, unknown> }> };
    expect(json.layers[0].format).toBe('qcow2');
    expect(json.layers[0].details).toMatchObject({ version: 3, clusterSize: 65536, compressionType: 'zstd', extendedL2: false, dirty: false, corrupt: false, snapshots: 0 });
    expect(json.layers[0].details.backingChain).toEqual([{ name: 'base.qcow2', path: p('base.qcow2'), format: 'qcow2', formatFrom: 'header' }]);

    const server = await spawnServer({ args: ['--export', `vm=${p('top.qcow2')},${p('o.asif')}`] });
    try {
      const uri = server.uri('vm');
      const compare = await runCommand('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', p('top.qcow2'), uri]);
      expect(compare.code, compare.stdout + compare.stderr).toBe(0);

      const map = await runCommand('nbdinfo', ['--map', '--json', uri]);
      expect(map.code, map.stderr).toBe(0);
      const served = (JSON.parse(map.stdout) as NbdinfoExtent[]).map((e) => ({ offset: e.offset, length: e.length, data: e.type === 0 }));
      const want = (await qemuMap(p('top.qcow2'))).map((r) => ({ offset: r.offset, length: r.length, data: r.state === 'data' }));
      expect(dataRuns(served)).toEqual(dataRuns(want));

      const model = await qemuBytes(p('top.qcow2'), p('oracle.raw'));
      const c = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'vm' });
      const data = Buffer.alloc(3 * 65536, 0x77);
      await c.pwrite(data, MiB + 4096);
      data.copy(model, MiB + 4096);
      await c.zero(8 * MiB, 512 * 1024);
      model.fill(0, 8 * MiB, 8 * MiB + 512 * 1024);
      expect((await c.pread(0, 16 * MiB)).equals(model)).toBe(true);
      await c.disconnect();
    } finally {
      expect(await server.stop()).toBe(0);
    }
    expect([await sha(p('base.qcow2')), await sha(p('top.qcow2'))]).toEqual(before);
    await ok(['convert', p('top.qcow2'), p('o.asif'), '-O', p('flat.raw')]);
    const flat = await fs.readFile(p('flat.raw'));
    expect(flat.subarray(MiB + 4096, MiB + 4096 + 3 * 65536).every((b) => b === 0x77)).toBe(true);
  });

  it('check: a qcow2 chain that opens and maps is clean; a broken L2 entry is CORRUPT (exit 2)', async () => {
    expect(await ok(['check', p('top.qcow2')])).toContain('opens and maps cleanly');
    const bytes = await fs.readFile(p('base.qcow2'));
    const l2 = Number(bytes.readBigUInt64BE(Number(bytes.readBigUInt64BE(40))) & 0x00fffffffffffe00n);
    bytes.writeBigUInt64BE(bytes.readBigUInt64BE(l2) + 512n, l2);
    await fs.writeFile(p('broken.qcow2'), bytes);
    const r = await runStackbd(['check', '--json', p('broken.qcow2')]);
    expect(r.code).toBe(2);
    const report = JSON.parse(r.stdout) as { clean: boolean; errors: string[] };
    expect(report.clean).toBe(false);
    expect(report.errors[0]).toMatch(/guest offset 0: data cluster offset \d+ is not cluster-aligned/);
  });

  it('served alone, a qcow2 image is a read-only export', async () => {
    const server = await spawnServer({ args: ['--export', `x=${p('top.qcow2')}`] });
    try {
      const c = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'x' });
      const want = await qemuBytes(p('top.qcow2'), p('oracle2.raw'));
      expect((await c.pread(0, 16 * MiB)).equals(want)).toBe(true);
      // NBD_FLAG_READ_ONLY (bit 1 of the transmission flags), and a write is refused with EPERM.
      expect(c.flags & 2).toBe(2);
      const err = await c.pwrite(Buffer.alloc(512), 0).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NbdRequestError);
      expect((err as NbdRequestError).errno).toBe(NbdErrno.EPERM);
      await c.disconnect();
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });
});
