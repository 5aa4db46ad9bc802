/**
 * Sparse bundles built from the format facts, read against the flat disk they were cut from:
 * odd band sizes, missing, short and sparse bands, reads across band edges, a small cache of
 * open bands under concurrent reads, the pin, and every way a bundle is refused.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CorruptedImageError, UnsupportedFormatError } from '../../../src/block/errors.js';
import { pushRun, type Run } from '../../../src/block/runs.js';
import type { Layer } from '../../../src/formats/layer.js';
import { openImage } from '../../../src/formats/open-image.js';
import { probeFormat } from '../../../src/formats/probe.js';
import { BandFiles, bandName } from '../../../src/formats/sparsebundle/band-files.js';
import { openSparseBundle, SparseBundleImage } from '../../../src/formats/sparsebundle/index.js';
import { loadNative } from '../../../src/io/native.js';
import { runStackbd } from '../../helpers/run-command.js';
import { makeTempDir, removeDir } from '../../helpers/tmp.js';
import { infoPlist, standardFields, writeBundle, type BundleSpec } from './bundle-builder.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** A deterministic disk: patterned extents here and there, zeros elsewhere. */
function makeDisk(size: number, seed: number): Buffer {
  const disk = Buffer.alloc(size);
  let x = seed;
  const next = (): number => (x = (x * 1103515245 + 12345) % 2 ** 31);
  for (let i = 0; i < 40; i++) {
    const at = next() % size;
    const len = Math.min(size - at, 1 + (next() % (300 * KiB)));
    for (let j = 0; j < len; j++) disk[at + j] = (at + j * 7 + i) % 251 || 1;
  }
  return disk;
}

async function readAll(layer: SparseBundleImage, piece: number): Promise<Buffer> {
  const out = Buffer.alloc(layer.size);
  for (let at = 0; at < layer.size; at += piece) await layer.read(out.subarray(at, Math.min(layer.size, at + piece)), at);
  return out;
}

describe('sparse bundles', () => {
  let dir: string;
  const p = (name: string): string => path.join(dir, name);

  beforeAll(async () => {
    dir = await makeTempDir('stackbd-sparsebundle-');
  });
  afterAll(() => removeDir(dir));

  const layouts: Array<[string, BundleSpec]> = [
    ['1 MiB + 512 bands, some short', { bandSize: MiB + 512, size: 9 * MiB, store: (b) => (b % 2 ? 'short' : 'full') }],
    ['8 MiB bands, sparse band files', { bandSize: 8 * MiB, size: 20 * MiB + 512, store: () => 'sparse' }],
    ['odd band size, size not a whole number of bands', { bandSize: 777 * 512 + 3, size: 5 * MiB + 1536, store: (b) => (['full', 'short', 'sparse'] as const)[b % 3] }],
  ];
  for (const [title, spec] of layouts) {
    it(`${title}: reads and maps as the flat disk`, async () => {
      const bundle = p(`${title.replace(/\W+/g, '-')}.sparsebundle`);
      const disk = makeDisk(spec.size, spec.bandSize);
      // One band left all zeros, so its file is missing.
      disk.fill(0, spec.bandSize, Math.min(spec.size, 2 * spec.bandSize));
      const written = await writeBundle(bundle, disk, spec);
      expect(written).not.toContain(1);
      expect(await probeFormat(bundle)).toBe('sparsebundle');
      const layer = await openImage(bundle, { readOnly: true });
      try {
        expect(layer).toBeInstanceOf(SparseBundleImage);
        expect(layer.readOnly).toBe(true);
        expect(layer.size).toBe(Math.floor(spec.size / 512) * 512);
        const image = layer as SparseBundleImage;
        expect((await readAll(image, 333 * 512)).equals(disk.subarray(0, layer.size))).toBe(true);
        expect((await readAll(image, 3 * MiB + 4096)).equals(disk.subarray(0, layer.size))).toBe(true);

        const runs = await layer.map(0, layer.size);
        expect(runs[0].offset).toBe(0);
        expect(runs.at(-1)!.offset + runs.at(-1)!.length).toBe(layer.size);
        // Data runs hold everything that is not zero; absent exactly where no band file holds bytes.
        const absent: Run[] = [];
        for (let band = 0; band * spec.bandSize < layer.size; band++) {
          const start = band * spec.bandSize;
          const end = Math.min(layer.size, start + spec.bandSize);
          const length = written.includes(band) ? (await fs.stat(path.join(bundle, 'bands', band.toString(16)))).size : 0;
          pushRun(absent, start + length, end - start - Math.min(length, end - start), 'absent');
        }
        expect(runs.filter((r) => r.state === 'absent')).toEqual(absent.filter((r) => r.length > 0));
        for (const r of runs) {
          if (r.state !== 'data') expect(disk.subarray(r.offset, r.offset + r.length).every((b) => b === 0), `${r.state} at ${r.offset}`).toBe(true);
        }
        const zeros = runs.filter((r) => r.state === 'zero');
        // Holes show only where the file system tells them (the native addon).
        if (spec.store?.(0) === 'sparse' && loadNative()) expect(zeros.length).toBeGreaterThan(0);
        const details = await image.details();
        expect(details).toMatchObject({ bandSize: spec.bandSize, bandFiles: written.length, backingStoreVersion: 1, plist: 'Info.plist' });
      } finally {
        await layer.close();
      }
    });
  }

  it('a cache of two open bands serves many concurrent reads over many bands', async () => {
    const bundle = p('many.sparsebundle');
    const spec: BundleSpec = { bandSize: 64 * KiB, size: 4 * MiB };
    const disk = makeDisk(spec.size, 99);
    disk.fill(1, 0, 64 * KiB);
    await writeBundle(bundle, disk, spec);
    const layer = await openSparseBundle(bundle, { openBands: 2 });
    try {
      const reads = Array.from({ length: 64 }, (_, i) => {
        const at = (i * 61_440 + 512 * i) % (spec.size - 200 * KiB);
        const buf = Buffer.alloc(200 * KiB);
        return layer.read(buf, at).then(() => expect(buf.equals(disk.subarray(at, at + buf.length)), `read at ${at}`).toBe(true));
      });
      await Promise.all(reads);
      await layer.map(0, layer.size);
    } finally {
      await layer.close();
    }
  });

  it('band files in use stay open while others come and go; idle ones beyond the capacity are closed', async () => {
    const bandsDir = p('bandfiles');
    await fs.mkdir(bandsDir);
    for (let i = 0; i < 10; i++) await fs.writeFile(path.join(bandsDir, bandName(i)), Buffer.alloc(4096, i + 1));
    const bands = new BandFiles(bandsDir, 2);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const slow = bands.with(0, async (file) => {
      await held;
      const buf = Buffer.alloc(4096);
      await file.read(buf, 0);
      return buf.every((b) => b === 1);
    });
    for (let i = 1; i < 10; i++) {
      const ok = await bands.with(i, async (file) => {
        const buf = Buffer.alloc(16);
        await file.read(buf, 100);
        return buf.every((b) => b === i + 1);
      });
      expect(ok).toBe(true);
    }
    expect(bands.openCount).toBeLessThanOrEqual(3);
    release();
    expect(await slow).toBe(true);
    expect(bands.openCount).toBeLessThanOrEqual(2);
    await bands.close();
    expect(bands.openCount).toBe(0);
  });

  it('the pin changes when a band is rewritten or added', async () => {
    const bundle = p('pin.sparsebundle');
    const spec: BundleSpec = { bandSize: MiB, size: 4 * MiB };
    const disk = Buffer.alloc(spec.size);
    disk.fill(7, 0, 10);
    await writeBundle(bundle, disk, spec);
    const layer = await openSparseBundle(bundle);
    try {
      const first = await layer.pin();
      expect(first).toMatchObject({ size: 4 * MiB });
      await new Promise((r) => setTimeout(r, 20));
      await fs.writeFile(path.join(bundle, 'bands', '0'), Buffer.alloc(10, 8));
      const rewritten = await layer.pin();
      expect(rewritten.newestBandMtime).not.toBe(first.newestBandMtime);
      expect(rewritten.bandsMtime).toBe(first.bandsMtime);
      await fs.writeFile(path.join(bundle, 'bands', '3'), Buffer.alloc(10, 9));
      expect((await layer.pin()).bandsMtime).not.toBe(first.bandsMtime);
    } finally {
      await layer.close();
    }
  });

  describe('refused bundles', () => {
    async function bundleWith(name: string, plist: string | Buffer | null, extra?: (b: string) => Promise<void>): Promise<string> {
      const bundle = p(name);
      await fs.mkdir(path.join(bundle, 'bands'), { recursive: true });
      if (plist !== null) await fs.writeFile(path.join(bundle, 'Info.plist'), plist);
      await extra?.(bundle);
      return bundle;
    }
    const good = { bandSize: MiB, size: 4 * MiB };

    it('malformed plists are CorruptedImageError naming Info.plist', async () => {
      const cases: Array<[string, string | Buffer, RegExp]> = [
        ['not XML', 'band-size = 8M', /not well-formed XML/],
        ['broken XML', infoPlist(standardFields(good)).replace('</dict>', ''), /not well-formed XML/],
        ['not UTF-8', Buffer.from([0x3c, 0xff, 0xfe, 0x3e]), /not valid UTF-8/],
        ['not a dict', '<?xml version="1.0"?><plist version="1.0"><array/></plist>', /not a dict/],
        ['no band size', infoPlist({ ...standardFields(good), 'band-size': 'big' }), /band-size is "big"/],
        ['band size 0', infoPlist({ ...standardFields(good), 'band-size': 0 }), /band-size is 0/],
        ['negative size', infoPlist({ ...standardFields(good), size: -5 }), /size is -5/],
        ['too large', 'x'.repeat(100_000), /too many for a property list/],
      ];
      for (const [what, plist, message] of cases) {
        const bundle = await bundleWith(`bad-${what.replace(/\W+/g, '-')}.sparsebundle`, plist);
        const err = await openSparseBundle(bundle).catch((e: unknown) => e);
        expect(err, what).toBeInstanceOf(CorruptedImageError);
        expect((err as Error).message, what).toContain(path.join(bundle, 'Info.plist'));
        expect((err as Error).message, what).toMatch(message);
      }
    });

    it('an unknown bundle type or backing-store version is UnsupportedFormatError', async () => {
      const type = await bundleWith('type.sparsebundle', infoPlist({ ...standardFields(good), 'diskimage-bundle-type': 'com.example.other' }));
      await expect(openSparseBundle(type)).rejects.toThrow(UnsupportedFormatError);
      const v3 = await bundleWith('v3.sparsebundle', infoPlist({ ...standardFields(good), 'bundle-backingstore-version': 3 }));
      await expect(openSparseBundle(v3)).rejects.toThrow(/bundle-backingstore-version 3/);
    });

    it('Info.bckup stands in for a missing or broken Info.plist; with neither the bundle is refused', async () => {
      const backup = await bundleWith('backup.sparsebundle', '<broken', async (b) => {
        await fs.writeFile(path.join(b, 'Info.bckup'), infoPlist(standardFields(good)));
        await fs.writeFile(path.join(b, 'bands', '2'), Buffer.alloc(MiB, 3));
      });
      const layer = await openSparseBundle(backup);
      expect((await layer.details()).plist).toBe('Info.bckup');
      const buf = Buffer.alloc(512);
      await layer.read(buf, 2 * MiB + 512);
      expect(buf.every((b) => b === 3)).toBe(true);
      await layer.close();
      const neither = await bundleWith('neither.sparsebundle', null);
      await expect(openSparseBundle(neither)).rejects.toThrow(/has no Info.plist \(nor Info.bckup\)/);
      const bothBroken = await bundleWith('both.sparsebundle', '<broken', (b) => fs.writeFile(path.join(b, 'Info.bckup'), 'also broken'));
      await expect(openSparseBundle(bothBroken)).rejects.toThrow(/Info\.plist: the property list is not well-formed/);
    });

    it('an encrypted bundle, data in mapped/, no bands directory', async () => {
      const plist = infoPlist(standardFields(good));
      const encrypted = await bundleWith('enc.sparsebundle', plist, (b) => fs.writeFile(path.join(b, 'token'), 'encrcdsa\0\0\0\x02'));
      await expect(openSparseBundle(encrypted)).rejects.toThrow(/encrypted/);
      const v2 = infoPlist({ ...standardFields(good), 'bundle-backingstore-version': 2 });
      const mapped = await bundleWith('mapped.sparsebundle', v2, async (b) => {
        await fs.mkdir(path.join(b, 'mapped'));
        await fs.writeFile(path.join(b, 'mapped', '0'), 'x');
      });
      await expect(openSparseBundle(mapped)).rejects.toThrow(UnsupportedFormatError);
      const v2plain = await bundleWith('v2.sparsebundle', v2);
      const layer = await openSparseBundle(v2plain);
      expect((await layer.details()).backingStoreVersion).toBe(2);
      await layer.close();
      const noBands = p('nobands.sparsebundle');
      await fs.mkdir(noBands);
      await fs.writeFile(path.join(noBands, 'Info.plist'), plist);
      await expect(openSparseBundle(noBands)).rejects.toThrow(/has no bands directory/);
    });

    it('writes are refused with EPERM', async () => {
      const layer: Layer = await openSparseBundle(await bundleWith('ro.sparsebundle', infoPlist(standardFields(good))));
      await expect(layer.write(Buffer.alloc(512), 0)).rejects.toMatchObject({ errno: 'EPERM' });
      await expect(layer.zero(0, 512)).rejects.toMatchObject({ errno: 'EPERM' });
      await layer.close();
    });
  });

  it('the CLI probes a bundle: info shows it, convert flattens it', async () => {
    const bundle = p('cli.sparsebundle');
    const spec: BundleSpec = { bandSize: MiB + 512, size: 6 * MiB, store: (b) => (b === 2 ? 'short' : 'full') };
    const disk = makeDisk(spec.size, 5);
    await writeBundle(bundle, disk, spec);
    const info = await runStackbd(['info', bundle]);
    expect(info.code, info.stderr).toBe(0);
    expect(info.stdout).toMatch(/format:\s+SPARSEBUNDLE/);
    expect(info.stdout).toMatch(/band size:\s+1049088/);
    const convert = await runStackbd(['convert', bundle, '-O', p('flat.raw')]);
    expect(convert.code, convert.stderr).toBe(0);
    expect((await fs.readFile(p('flat.raw'))).equals(disk)).toBe(true);
  });
});
