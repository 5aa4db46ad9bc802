/**
 * `stackbd info` of the read-only foreign bases (issue 12 item 8): the file size is the bytes
 * of the image's files (not its virtual size), and `--json` gives for each of qcow2, sparse
 * bundle and DMG its format, virtual size, stored size and the codec per kind of storage where
 * there is one (qcow2: bytes per cluster kind, compressed clusters' codec and stored bytes;
 * DMG: per chunk kind). qcow2 figures are checked against what qemu-io wrote.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixturePath } from '../formats/dmg/dmg-fixtures.js';
import { qemuImg, qemuIo, requireQemu } from '../formats/qcow2/qemu-oracle.js';
import { writeBundle } from '../formats/sparsebundle/bundle-builder.js';
import { runStackbd } from '../helpers/run-command.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const KiB = 1024;
const MiB = 1024 * KiB;

interface InfoJson {
  layers: Array<{ format: string; virtualSize: number; fileSize: number; details: Record<string, unknown> }>;
}

async function info(image: string): Promise<{ json: InfoJson['layers'][0]; text: string }> {
  const j = await runStackbd(['info', '--json', image]);
  expect(j.code, j.stderr).toBe(0);
  const t = await runStackbd(['info', image]);
  expect(t.code, t.stderr).toBe(0);
  return { json: (JSON.parse(j.stdout) as InfoJson).layers[0], text: t.stdout };
}

/** The text output's "file size" line (the only one: the details do not repeat it). */
function fileSizeLine(text: string): string {
  const lines = text.split('\n').filter((l) => /^\s*file size:/.test(l));
  expect(lines).toHaveLength(1);
  return lines[0];
}

describe('info of foreign bases: file size, stored size, codecs', () => {
  let dir: string;
  const p = (name: string): string => path.join(dir, name);

  beforeAll(async () => {
    dir = await makeTempDir('stackbd-info-foreign-');
  });
  afterAll(() => removeDir(dir));

  it('qcow2: the file size, the stored size of the chain, and bytes per cluster kind with the codec of compressed ones', async () => {
    requireQemu();
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compression_type=zstd', p('base.qcow2'), String(8 * MiB));
    // 1 MiB of data, 1 MiB of zero clusters, one compressed 64 KiB cluster; the rest unallocated.
    await qemuIo(p('base.qcow2'), ['write -P 0x11 0 1M', 'write -z 2M 1M', 'write -c -P 0x22 4M 64k']);
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', p('top.qcow2'));
    await qemuIo(p('top.qcow2'), ['write -P 0x33 6M 128k']);
    const baseSize = (await fs.stat(p('base.qcow2'))).size;
    const topSize = (await fs.stat(p('top.qcow2'))).size;

    const base = await info(p('base.qcow2'));
    expect(base.json.format).toBe('qcow2');
    expect(base.json.virtualSize).toBe(8 * MiB);
    expect(base.json.fileSize).toBe(baseSize);
    expect(fileSizeLine(base.text)).toContain(`(${baseSize} bytes)`);
    const clusters = base.json.details.clusters as Record<string, { bytes: number; storedBytes?: number; codec?: string }>;
    expect(base.json.details).toMatchObject({ virtualSize: 8 * MiB, fileSize: baseSize, storedSize: baseSize, compressionType: 'zstd' });
    expect(clusters).toMatchObject({
      data: { bytes: 1 * MiB },
      zero: { bytes: 1 * MiB },
      compressed: { bytes: 64 * KiB, codec: 'zstd' },
      unallocated: { bytes: 8 * MiB - 2 * MiB - 64 * KiB },
    });
    // 64 KiB of one byte compress to a few sectors.
    expect(clusters.compressed.storedBytes).toBeGreaterThan(0);
    expect(clusters.compressed.storedBytes! % 512).toBe(0);
    expect(clusters.compressed.storedBytes).toBeLessThan(64 * KiB);

    const top = await info(p('top.qcow2'));
    expect(top.json.fileSize).toBe(topSize);
    expect(top.json.details).toMatchObject({ fileSize: topSize, storedSize: topSize + baseSize, clusters: { data: { bytes: 128 * KiB }, unallocated: { bytes: 8 * MiB - 128 * KiB } } });
  });

  it('sparse bundle: the bytes of all its files, and of its bands as the stored size; no codec', async () => {
    const bundle = p('disk.sparsebundle');
    const size = 6 * MiB + 512;
    const disk = Buffer.alloc(size);
    disk.fill(0x41, 100 * KiB, 900 * KiB);
    disk.fill(0x44, 2 * MiB + 512 * KiB, 2 * MiB + 516 * KiB);
    disk.fill(0x42, 4 * MiB, 4 * MiB + 5000);
    disk.fill(0x43, size - 512, size);
    // Bands 0, 2, 4 and 6 hold data: stored whole, sparse, short and whole; the others are missing.
    const ways = ['full', 'short', 'sparse'] as const;
    await writeBundle(bundle, disk, { bandSize: 1 * MiB, size, store: (band) => ways[band % 3] });
    let all = 0;
    let bands = 0;
    for (const name of await fs.readdir(bundle)) {
      const st = await fs.stat(path.join(bundle, name));
      if (st.isFile()) all += st.size;
    }
    for (const name of await fs.readdir(path.join(bundle, 'bands'))) bands += (await fs.stat(path.join(bundle, 'bands', name))).size;
    const got = await info(bundle);
    expect(got.json.format).toBe('sparsebundle');
    expect(got.json.fileSize).toBe(all + bands);
    expect(fileSizeLine(got.text)).toContain(`(${all + bands} bytes)`);
    expect(got.json.details).toMatchObject({ virtualSize: size, storedSize: bands, fileSize: all + bands, bandSize: MiB, bandFiles: 4 });
  });

  it('DMG: the stored size is the data fork, beside the codec of each chunk kind', async () => {
    const file = fixturePath('compression-zlib.dmg');
    const got = await info(file);
    expect(got.json.fileSize).toBe((await fs.stat(file)).size);
    expect(got.json.details).toMatchObject({ virtualSize: 5242880, storedSize: 2973, compressedSize: 2973, chunks: { zlib: { storedBytes: 2973 } } });
  });
});
