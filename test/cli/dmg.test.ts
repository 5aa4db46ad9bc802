/**
 * DMG through the command line: info (with the format's details), map, check (exit 0 clean,
 * 2 corrupt, 1 refused), convert to and from DMG (UDZO and UDRO), and a served stack of a DMG
 * base with an ASIF overlay that qemu-io writes and reads back while the DMG stays unchanged.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/client.js';
import { TransmissionFlag } from '../../src/nbd/constants.js';
import { requireTool } from '../helpers/require-tool.js';
import { runCommand, runStackbd, type CommandResult } from '../helpers/run-command.js';
import { PROJECT_ROOT, spawnServer } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const GPT = path.join(PROJECT_ROOT, 'test/fixtures/dmg/gpt.dmg');
const GPT_SHA = '8a091a4d2f9ad790315d88e3666d81c71a674736e827e0b8410eb257d0a38724';
const GPT_SIZE = 9379840;

const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

async function ok(args: string[]): Promise<string> {
  const r = await runStackbd(args);
  expect(r.code, `stackbd ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

describe('DMG on the command line', () => {
  let dir: string;
  const p = (name: string): string => path.join(dir, name);

  beforeAll(async () => {
    dir = await makeTempDir('stackbd-dmg-cli-');
  });
  afterAll(() => removeDir(dir));

  it('info shows the format, sizes and details; map shows the ignore chunks as zero', async () => {
    const text = await ok(['info', GPT]);
    expect(text).toMatch(/format:\s+DMG/);
    expect(text).toMatch(/file size:\s+.*\(18349 bytes\)/);
    const info = JSON.parse(await ok(['info', GPT, '--json'])) as { layers: Array<{ format: string; virtualSize: number; details: Record<string, unknown> }> };
    expect(info.layers[0]).toMatchObject({ format: 'dmg', virtualSize: GPT_SIZE, details: { udifFormat: 'UDZO', compressedSize: 14771 } });
    const map = JSON.parse(await ok(['map', GPT, '--json'])) as Array<{ offset: number; length: number; state: string }>;
    expect(map.reduce((n, e) => n + e.length, 0)).toBe(GPT_SIZE);
    expect(map.some((e) => e.state === 'zero')).toBe(true);
  });

  it('check: 0 for a clean image, 2 for damage or a missing trailer, 1 for an encrypted image', async () => {
    expect(await ok(['check', GPT])).toContain('clean');
    const damaged = Buffer.from(await fs.readFile(path.join(PROJECT_ROOT, 'test/fixtures/dmg/compression-raw.dmg')));
    damaged[40000] ^= 1;
    await fs.writeFile(p('damaged.dmg'), damaged);
    const r = await runStackbd(['check', p('damaged.dmg')]);
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/error: blkx 3 " \(Windows_FAT_16 : 3\)": CRC32 is/);
    expect(r.stdout).toContain('CORRUPT');
    const json = JSON.parse((await runStackbd(['check', p('damaged.dmg'), '--json'])).stdout) as { clean: boolean; errors: string[] };
    expect(json.clean).toBe(false);
    expect(json.errors).toHaveLength(2);
    await fs.writeFile(p('cut.dmg'), damaged.subarray(0, 30000));
    const cut = await runStackbd(['check', p('cut.dmg')]);
    expect(cut.code).toBe(2);
    expect(cut.stdout).toMatch(/no koly trailer/);
    await fs.writeFile(p('secret.dmg'), Buffer.concat([Buffer.from('encrcdsa'), randomBytes(4096)]));
    const secret = await runStackbd(['check', p('secret.dmg')]);
    expect(secret.code).toBe(1);
    expect(secret.stderr.trim().split('\n')).toEqual([expect.stringMatching(/secret\.dmg: is an encrypted disk image \(encrcdsa, version 2\)/)]);
  });

  it('convert: to UDZO and UDRO and back; refuses to replace a file without --force', async () => {
    const raw = randomBytes(6 * MiB);
    raw.fill(0, 2 * MiB, 4 * MiB);
    raw.fill(0x61, 4 * MiB, 5 * MiB);
    await fs.writeFile(p('in.raw'), raw);
    await ok(['convert', p('in.raw'), '-O', p('z.dmg')]);
    await ok(['convert', p('in.raw'), '-O', p('r.dmg'), '--output-format', 'dmg', '--dmg-compression', 'raw']);
    for (const [file, code] of [
      ['z.dmg', 'UDZO'],
      ['r.dmg', 'UDRO'],
    ]) {
      const info = JSON.parse(await ok(['info', p(file), '--json'])) as { layers: Array<{ details: { udifFormat: string } }> };
      expect(info.layers[0].details.udifFormat).toBe(code);
      expect(await ok(['check', p(file)])).toContain('clean');
      await ok(['convert', p(file), '-O', p(`${file}.raw`)]);
      expect((await fs.readFile(p(`${file}.raw`))).equals(raw)).toBe(true);
    }
    expect((await fs.stat(p('z.dmg'))).size).toBeLessThan((await fs.stat(p('r.dmg'))).size);
    const again = await runStackbd(['convert', p('in.raw'), '-O', p('z.dmg')]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('--force');
    await ok(['convert', GPT, '-O', p('z.dmg'), '--force']);
    await ok(['convert', p('z.dmg'), '-O', p('gpt.raw')]);
    expect(sha(await fs.readFile(p('gpt.raw')))).toBe(GPT_SHA);
  });

  it('serves a DMG alone read-only, with its ignore chunks as holes in base:allocation', async () => {
    const server = await spawnServer({ args: ['--export', `vm=${GPT}`] });
    try {
      const c = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'vm', metaContexts: ['base:allocation'] });
      try {
        expect(c.flags & TransmissionFlag.READ_ONLY).toBe(TransmissionFlag.READ_ONLY);
        expect(sha(await c.pread(0, GPT_SIZE))).toBe(GPT_SHA);
        const extents = (await c.blockStatus(0, GPT_SIZE)).get('base:allocation')!;
        // HOLE | ZERO (3) for the ignore chunks, 0 for data; the last one runs to the end.
        expect(extents.some((e) => e.flags === 3)).toBe(true);
        expect(extents.some((e) => e.flags === 0)).toBe(true);
        expect(extents.reduce((n, e) => n + e.length, 0)).toBe(GPT_SIZE);
      } finally {
        await c.disconnect();
      }
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });

  it('serves a DMG base with an ASIF overlay: qemu-io writes and reads back, the DMG never changes', async () => {
    requireTool('qemu-io');
    const base = p('base.dmg');
    await fs.copyFile(GPT, base);
    const before = sha(await fs.readFile(base));
    expect(await ok(['append', base, '--new', p('over.asif')])).toMatch(/identity of DMG .* recorded/);
    const layers = [base, p('over.asif')];
    await ok(['convert', GPT, '-O', p('model.raw')]);
    const model = await fs.readFile(p('model.raw'));
    const qemuIo = (port: number, commands: string[]): Promise<CommandResult> =>
      runCommand('qemu-io', ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), `nbd://127.0.0.1:${port}/vm`]);

    const server = await spawnServer({ args: ['--export', `vm=${layers.join(',')}`] });
    try {
      const w = await qemuIo(server.port, ['write -P 0xab 1000 5000', `write -P 0xcd ${MiB - 512} ${2 * MiB}`, 'write -z 4194304 65536', 'flush']);
      expect(w.code, w.stderr).toBe(0);
      expect(w.stdout).not.toMatch(/error|failed/i);
      model.fill(0xab, 1000, 6000);
      model.fill(0xcd, MiB - 512, 3 * MiB - 512);
      model.fill(0, 4 * MiB, 4 * MiB + 65536);
    } finally {
      expect(await server.stop()).toBe(0);
    }
    const again = await spawnServer({ args: ['--export', `vm=${layers.join(',')}`] });
    try {
      const r = await qemuIo(again.port, ['read -P 0xab 1000 5000', `read -P 0xcd ${MiB - 512} ${2 * MiB}`, 'read -P 0 4194304 65536']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).not.toMatch(/Pattern verification failed|error/i);
      const c = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: again.port }, { exportName: 'vm' });
      try {
        expect(sha(await c.pread(0, GPT_SIZE))).toBe(sha(model));
      } finally {
        await c.disconnect();
      }
    } finally {
      expect(await again.stop()).toBe(0);
    }
    expect(sha(await fs.readFile(base))).toBe(before);
    const commit = await runStackbd(['commit', ...layers]);
    expect(commit.code).toBe(1);
    expect(commit.stderr).toMatch(/base\.dmg: a DMG image cannot be written: commit needs a writable layer below the top/);
    expect(sha(await fs.readFile(base))).toBe(before);
  });
});
