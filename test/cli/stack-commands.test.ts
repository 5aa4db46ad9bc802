import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/client.js';
import { runStackbd, type CommandResult } from '../helpers/run-command.js';
import { spawnServer } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;

const cli = (args: string[]): Promise<CommandResult> => runStackbd(args);

async function ok(args: string[]): Promise<string> {
  const r = await cli(args);
  expect(r.code, `stackbd ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

const sha = async (file: string): Promise<string> => createHash('sha256').update(await fs.readFile(file)).digest('hex');

describe('stack commands of the CLI', () => {
  let dir: string;
  const p = (name: string): string => path.join(dir, name);

  beforeAll(async () => {
    dir = await makeTempDir();
  });
  afterAll(() => removeDir(dir));

  it('create: ASIF and RAW with suffixes; refuses to overwrite without --force', async () => {
    expect(await ok(['create', p('a.asif'), '--size', '100GB'])).toContain('195312500 blocks');
    const info = JSON.parse(await ok(['info', p('a.asif'), '--json'])) as { layers: Array<{ blockCount: number; chunkSize: number; format: string }> };
    expect(info.layers[0]).toMatchObject({ format: 'asif', blockCount: 195312500, chunkSize: MiB });
    await ok(['create', p('r.raw'), '--size', '64M', '--format', 'raw']);
    expect((await fs.stat(p('r.raw'))).size).toBe(64 * MiB);
    expect((await fs.stat(p('r.raw'))).blocks).toBe(0);
    const again = await cli(['create', p('a.asif'), '--size', '1G']);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('--force');
    await ok(['create', p('a.asif'), '--size', '1G', '--force', '--block-size', '4096']);
    const bad = await cli(['create', p('b.asif'), '--size', '1000']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/whole number of 512-byte blocks/);
  });

  it('append, serve, info, map, convert and commit a three-layer stack', async () => {
    const base = p('base.raw');
    const content = randomBytes(16 * MiB);
    content.fill(0, 8 * MiB, 12 * MiB);
    await fs.writeFile(base, content);
    const baseHash = await sha(base);
    await ok(['append', base, '--new', p('cache.asif'), '--type', 'cache']);
    await ok(['append', base, p('cache.asif'), '--new', p('snap1.asif')]);
    const layers = [base, p('cache.asif'), p('snap1.asif')];

    const server = await spawnServer({ args: ['--export', `vm=${layers.join(',')}`] });
    const model = Buffer.from(content);
    try {
      const c = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'vm', metaContexts: ['qemu:allocation-depth'] });
      const data = randomBytes(2 * MiB);
      await c.pwrite(data, 3 * MiB);
      data.copy(model, 3 * MiB);
      await c.zero(13 * MiB, MiB);
      model.fill(0, 13 * MiB, 14 * MiB);
      expect((await c.pread(0, 16 * MiB)).equals(model)).toBe(true);
      await c.flush(); // also waits for the cache fills of that read
      const depth = (await c.blockStatus(0, 16 * MiB)).get('qemu:allocation-depth')!;
      // 0-3 MiB: cached from the base by the read above (depth 2); 3-5 MiB written (depth 1).
      expect(depth.slice(0, 2)).toEqual([
        { length: 3 * MiB, flags: 2 },
        { length: 2 * MiB, flags: 1 },
      ]);
      await c.disconnect();
    } finally {
      expect(await server.stop()).toBe(0);
    }
    expect(await sha(base)).toBe(baseHash);

    const info = JSON.parse(await ok(['info', ...layers, '--json'])) as { chain: { valid: boolean }; layers: Array<{ layerType: string | null; parentUUID: string | null; layerUUID: string | null }> };
    expect(info.chain.valid).toBe(true);
    expect(info.layers.map((l) => l.layerType)).toEqual([null, 'cache', 'overlay']);
    expect(info.layers[2].parentUUID).toBe(info.layers[1].layerUUID);
    const text = await ok(['info', ...layers]);
    expect(text).toContain('chain: valid');

    const map = JSON.parse(await ok(['map', ...layers, '--json'])) as Array<{ offset: number; length: number; depth: number; state: string; file: string | null }>;
    const top = map.filter((e) => e.depth === 1);
    expect(top.map((e) => [e.offset, e.length, e.state])).toEqual([
      [3 * MiB, 2 * MiB, 'data'],
      [13 * MiB, MiB, 'zero'],
    ]);
    expect(top[0].file).toBe(p('snap1.asif'));
    expect(await ok(['map', ...layers])).toMatch(/Offset\s+Length\s+State\s+Depth/);

    await ok(['convert', ...layers, '-O', p('flat.raw')]);
    expect((await fs.readFile(p('flat.raw'))).equals(model)).toBe(true);
    await ok(['convert', ...layers, '-O', p('flat.asif')]);
    expect(await ok(['info', p('flat.asif'), '--json'])).toContain('"format": "asif"');
    await ok(['convert', p('flat.asif'), '-O', p('flat2.raw')]);
    expect((await fs.readFile(p('flat2.raw'))).equals(model)).toBe(true);
    expect((await cli(['check', p('flat.asif')])).code).toBe(0);

    // Snapshot: a second overlay, written, then committed into the first.
    await ok(['append', ...layers, '--new', p('snap2.asif')]);
    const full = [...layers, p('snap2.asif')];
    const server2 = await spawnServer({ args: ['--export', `vm=${full.join(',')}`] });
    try {
      const c = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server2.port }, { exportName: 'vm' });
      const more = randomBytes(MiB);
      await c.pwrite(more, 10 * MiB);
      more.copy(model, 10 * MiB);
      await c.disconnect();
    } finally {
      await server2.stop();
    }
    expect(await ok(['commit', ...full])).toContain('committed');
    await ok(['convert', ...layers, '-O', p('after-commit.raw')]);
    expect((await fs.readFile(p('after-commit.raw'))).equals(model)).toBe(true);
    // The committed-into layer changed, so the old top no longer stacks on it.
    const stale = await cli(['info', ...full]);
    expect(stale.stdout).toContain('chain: INVALID');
    expect(stale.code).toBe(1);
    expect(await sha(base)).toBe(baseHash);
  });

  it('truncate grows the top layer; the grown part reads as zeros', async () => {
    const base = p('tb.raw');
    await fs.writeFile(base, randomBytes(4 * MiB));
    await ok(['append', base, '--new', p('tt.asif')]);
    await ok(['truncate', base, p('tt.asif'), '--size', '8M']);
    await ok(['convert', base, p('tt.asif'), '-O', p('tt.raw')]);
    const flat = await fs.readFile(p('tt.raw'));
    expect(flat.length).toBe(8 * MiB);
    expect(flat.subarray(4 * MiB).every((b) => b === 0)).toBe(true);
    const unaligned = await cli(['truncate', base, p('tt.asif'), '--size', '5000']);
    expect(unaligned.code).toBe(2);
  });

  it('reports a corrupted image in one line with the file name', async () => {
    const file = p('corrupt.asif');
    await ok(['create', file, '--size', '1G']);
    const handle = await fs.open(file, 'r+');
    await handle.write(Buffer.from([9]), 0, 1, 7); // version 9
    await handle.close();
    const r = await cli(['info', file]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(file);
  });

  it('serves exports from a --config file', async () => {
    const disk = p('cfg.raw');
    await fs.writeFile(disk, Buffer.alloc(MiB, 3));
    const cfg = p('stackbd.json');
    await fs.writeFile(cfg, JSON.stringify({ exports: [{ name: 'ro', layers: ['cfg.raw'], readOnly: true, description: 'from config' }] }));
    const server = await spawnServer({ args: ['--config', cfg] });
    try {
      const list = await NbdClient.list({ kind: 'tcp', host: '127.0.0.1', port: server.port });
      expect(list).toEqual([{ name: 'ro', description: 'from config' }]);
      const c = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'ro' });
      expect(c.flags & 2).toBe(2);
      await c.disconnect();
    } finally {
      await server.stop();
    }
    await fs.writeFile(cfg, JSON.stringify({ exports: [{ name: 'x' }] }));
    const bad = await cli(['serve', '--config', cfg, '--listen', '127.0.0.1:0']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('exports[0].layers');
  });
});
