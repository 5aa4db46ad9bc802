/**
 * qcow2 images made and written by QEMU (qemu-img 7.2, qemu-io) in every layout the reader
 * supports: bytes must equal `qemu-img convert -O raw` and the map `qemu-img map`; the bytes
 * per cluster kind that `info --json` shows (details().clusters) add up to qemu's map too.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openImage } from '../../../src/formats/open-image.js';
import type { LayerDetails } from '../../../src/formats/layer.js';
import { Qcow2Image } from '../../../src/formats/qcow2/index.js';
import { makeTempDir, removeDir } from '../../helpers/tmp.js';
import { layerBytes, layerMap, qemuBytes, qemuImg, qemuIo, qemuMap, requireQemu } from './qemu-oracle.js';

const MiB = 1024 * 1024;
const SIZE = 12 * MiB;

/** Writes that leave every kind of cluster: data, partial, zero, discarded, unaligned, last. */
const WRITES = [
  'write -P 0xab 1M 64k',
  'write -P 0x11 4k 4k',
  'write -P 0x22 3M 1M',
  'discard 3328k 256k',
  'write -z 2M 128k',
  'write -P 0x33 5243392 3k',
  'write -z 6M 3M',
  'write -P 0x44 8M 512k',
  'write -z 8448k 4k',
  `write -P 0x55 ${SIZE - 64 * 1024} 64k`,
];

/** A raw source worth compressing: random bytes, text, zeros. */
function compressibleSource(): Buffer {
  const src = Buffer.alloc(SIZE);
  randomBytes(MiB).copy(src, 0);
  src.write('stackbd reads qcow2 '.repeat(52_000), 2 * MiB, 'latin1');
  randomBytes(8192).copy(src, 7 * MiB + 1000);
  src.fill(0x5a, 10 * MiB, 10 * MiB + 300_000);
  return src;
}

describe('qcow2 images written by QEMU read as qemu-img convert and map say', () => {
  let dir: string;
  const p = (name: string): string => `${dir}/${name}`;

  beforeAll(async () => {
    requireQemu();
    dir = await makeTempDir('stackbd-qcow2-oracle-');
    await fs.writeFile(p('src.raw'), compressibleSource());
  });
  afterAll(() => removeDir(dir));

  /** Checks the image against QEMU; returns its details (read while it is open). */
  async function expectLikeQemu(image: string): Promise<LayerDetails> {
    const layer = await openImage(image, { readOnly: true });
    try {
      expect(layer).toBeInstanceOf(Qcow2Image);
      const want = await qemuBytes(image, p('oracle.raw'));
      expect(layer.size).toBe(want.length);
      const got = await layerBytes(layer);
      expect(got.equals(want), `bytes of ${image}`).toBe(true);
      const runs = await qemuMap(image);
      expect(await layerMap(layer)).toEqual(runs);
      const details = await layer.details!();
      // No backing file: QEMU's data is data and compressed clusters, its zero the zero ones.
      const bytes = (state: string): number => runs.filter((r) => r.state === state).reduce((n, r) => n + r.length, 0);
      const clusters = details.clusters as Record<string, { bytes: number }>;
      expect({ data: clusters.data.bytes + clusters.compressed.bytes, zero: clusters.zero.bytes, absent: clusters.unallocated.bytes }).toEqual({
        data: bytes('data'),
        zero: bytes('zero'),
        absent: bytes('absent'),
      });
      return details;
    } finally {
      await layer.close();
    }
  }

  const created: Array<[string, string[]]> = [
    ['default options', []],
    ['zstd compression type', ['-o', 'compression_type=zstd']],
    ['extended L2 entries (subclusters)', ['-o', 'extended_l2=on']],
    ['extended L2 with 2 MiB clusters', ['-o', 'extended_l2=on,cluster_size=2M']],
    ['compat=0.10 (version 2)', ['-o', 'compat=0.10']],
    ['4 KiB clusters', ['-o', 'cluster_size=4k']],
    ['2 MiB clusters', ['-o', 'cluster_size=2M']],
    ['512-byte clusters', ['-o', 'cluster_size=512']],
    ['metadata preallocation', ['-o', 'preallocation=metadata']],
  ];
  for (const [title, options] of created) {
    it(`${title}: written with qemu-io`, async () => {
      const image = p(`${title.replace(/\W+/g, '-')}.qcow2`);
      await qemuImg('create', '-f', 'qcow2', ...options, image, String(SIZE));
      await qemuIo(image, WRITES);
      const details = await expectLikeQemu(image);
      expect(details.version).toBe(options.includes('compat=0.10') ? 2 : 3);
      expect(details.extendedL2).toBe(options.some((o) => o.includes('extended_l2=on')));
    });
  }

  const compressed: Array<[string, string[]]> = [
    ['deflate', []],
    ['zstd', ['-o', 'compression_type=zstd']],
    ['deflate, 4 KiB clusters', ['-o', 'cluster_size=4k']],
    ['zstd, 2 MiB clusters', ['-o', 'compression_type=zstd,cluster_size=2M']],
    ['deflate, extended L2', ['-o', 'extended_l2=on']],
    ['deflate, version 2', ['-o', 'compat=0.10']],
  ];
  for (const [title, options] of compressed) {
    it(`compressed (${title}) by qemu-img convert -c, then written over`, async () => {
      const image = p(`c-${title.replace(/\W+/g, '-')}.qcow2`);
      await qemuImg('convert', '-c', '-O', 'qcow2', ...options, p('src.raw'), image);
      const details = await expectLikeQemu(image);
      expect(details.compressionType).toBe(options.some((o) => o.includes('zstd')) ? 'zstd' : 'deflate');
      // Writing into compressed clusters makes them plain clusters again (copy on write).
      await qemuIo(image, ['write -P 0x66 2100k 4k', 'write -z 10M 64k', 'write -P 0x77 11M 512']);
      await expectLikeQemu(image);
    });
  }

  it('a virtual size that is not a whole number of sectors shows as whole sectors, as QEMU shows it', async () => {
    const image = p('odd.qcow2');
    await qemuImg('create', '-f', 'qcow2', image, String(MiB));
    await qemuIo(image, ['write -P 0x99 0 1M']);
    const patched = await fs.open(image, 'r+');
    const size = Buffer.alloc(8);
    size.writeBigUInt64BE(BigInt(MiB - 100));
    await patched.write(size, 0, 8, 24);
    await patched.close();
    const details = await expectLikeQemu(image);
    expect(details.virtualSize).toBe(MiB - 512);
    expect(details.headerVirtualSize).toBe(MiB - 100);
  });

  it('internal snapshots are fine: the active layer is read', async () => {
    const image = p('snapshots.qcow2');
    await qemuImg('create', '-f', 'qcow2', image, String(SIZE));
    await qemuIo(image, ['write -P 0x01 0 1M']);
    await qemuImg('snapshot', '-c', 'first', image);
    await qemuIo(image, ['write -P 0x02 512k 1M', 'write -z 4M 1M']);
    const details = await expectLikeQemu(image);
    expect(details.snapshots).toBe(1);
  });
});
