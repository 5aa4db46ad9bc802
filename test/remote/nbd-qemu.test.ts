/**
 * nbd:// bases on qemu-nbd -r: the bytes and the map of the upstream (compared with nbdinfo
 * --map on the upstream), several connections only when qemu-nbd may share the export, and an
 * upstream that comes back without the export refused.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { RequestError } from '../../src/block/errors.js';
import { openNbdBase } from '../../src/remote/nbd.js';
import { useTmpDir } from '../formats/helpers/tmp-dir.js';
import { requireTool } from '../helpers/require-tool.js';
import { DISK_SIZE, makeDisk, nbdinfoMap } from './helpers/disk.js';
import { trackUpstreams } from './helpers/lifecycle.js';
import { startQemuNbd, type Upstream } from './helpers/upstream.js';

describe('nbd:// base on qemu-nbd', () => {
  const tmp = useTmpDir('nbd-qemu');
  let disk: string;
  let content: Buffer;
  const { upstream, forget, open } = trackUpstreams();

  beforeAll(async () => {
    requireTool('qemu-nbd');
    requireTool('nbdinfo');
    disk = tmp('disk.img');
    content = await makeDisk(disk, 7);
  });

  async function qemuNbd(name: string, exportName: string, extra: string[] = []): Promise<Upstream> {
    return upstream(await startQemuNbd(tmp(`${name}.sock`), disk, exportName, extra));
  }

  it('reads the same bytes and the same map as qemu-nbd serves, over four connections when it may share', async () => {
    const up = await qemuNbd('shared', 'exp', ['-e', '4']);
    const mapOfUpstream = await nbdinfoMap(up.uri('exp'));
    const base = await open(up.uri('exp'));
    expect(base.size).toBe(DISK_SIZE);
    expect(base.stats.connections).toBe(4);
    const whole = Buffer.alloc(DISK_SIZE, 0xee);
    await base.read(whole, 0);
    expect(whole.equals(content)).toBe(true);
    const odd = Buffer.alloc(12_345);
    await base.read(odd, 1024 * 1024 - 77);
    expect(odd.equals(content.subarray(1024 * 1024 - 77, 1024 * 1024 - 77 + 12_345))).toBe(true);
    expect(await base.map(0, DISK_SIZE)).toEqual(mapOfUpstream);
    expect(mapOfUpstream.some((r) => r.state === 'zero')).toBe(true);
    expect(await base.pin()).toEqual({ size: DISK_SIZE, export: 'exp' });
  });

  it('uses one connection when qemu-nbd does not offer multi-conn', async () => {
    const up = await qemuNbd('single', 'exp');
    const base = await open(up.uri('exp'));
    expect(base.stats.connections).toBe(1);
    const buf = Buffer.alloc(64 * 1024);
    await base.read(buf, 0);
    expect(buf.equals(content.subarray(0, 64 * 1024))).toBe(true);
  });

  it('reads with the connections an upstream takes when it offers multi-conn but fewer clients', async () => {
    const up = await qemuNbd('two', 'exp', ['-e', '2']);
    const warnings: string[] = [];
    const base = await open(up.uri('exp'), { onWarning: (w) => warnings.push(w), connectTimeoutMs: 500 });
    expect(base.stats.connections).toBe(2);
    expect(warnings).toEqual([expect.stringMatching(/could not open connection \d of 4 \(connection closed: no answer within 500 ms\); will retry/)]);
    const reads = await Promise.all([0, 1, 2, 3].map(async (i) => {
      const buf = Buffer.alloc(64 * 1024);
      await base.read(buf, i * 1024 * 1024);
      return buf;
    }));
    reads.forEach((r, i) => expect(r.equals(content.subarray(i * 1024 * 1024, i * 1024 * 1024 + 64 * 1024))).toBe(true));
  });

  it('refuses an upstream that comes back without the export', async () => {
    const up = await qemuNbd('renamed', 'exp', ['-e', '4']);
    const warnings: string[] = [];
    const base = await open(up.uri('exp'), { onWarning: (w) => warnings.push(w), backoffBaseMs: 20 });
    await up.stop('SIGKILL');
    forget(up);
    await qemuNbd('renamed', 'other', ['-e', '4']);
    const err = await base.read(Buffer.alloc(4096), 0).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(RequestError);
    expect((err as RequestError).errno).toBe('EIO');
    expect((err as Error).message).toMatch(/the upstream no longer has the export "exp"/);
    expect(warnings.filter((w) => /no longer has the export/.test(w))).toHaveLength(1);
  });

  it('names an upstream that cannot be opened in one line', async () => {
    const up = await qemuNbd('missing', 'exp');
    const err = await openNbdBase(up.uri('nope')).then(
      () => null,
      (e: unknown) => e,
    );
    expect((err as Error).name).toBe('NbdSourceError');
    expect((err as Error).message).toMatch(/^nbd\+unix:\/\/\/nope\?socket=.*: cannot open the upstream export: option SET_META_CONTEXT refused \(ERR_UNKNOWN, 0x80000006\): export .nope. not present/);
  });
});
