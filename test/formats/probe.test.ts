/** Probing formats by magic, and opening/creating images of either format. */
import { statSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CorruptedImageError, IncompatibleStackingError, InvalidBlockCountError, UnsupportedFormatError } from '../../src/block/errors.js';
import { createAsif } from '../../src/formats/asif/index.js';
import { createImage, openImage } from '../../src/formats/open-image.js';
import { probeFormat } from '../../src/formats/probe.js';
import { useTmpDir } from './helpers/tmp-dir.js';

const tmp = useTmpDir('probe');

function file(name: string, head: Buffer | string, size = 4096, tail?: string): string {
  const path = tmp(name);
  const b = Buffer.alloc(size);
  Buffer.from(head).copy(b);
  if (tail) b.write(tail, size - 512, 'latin1');
  writeFileSync(path, b);
  return path;
}

describe('probeFormat', () => {
  it('finds ASIF by its magic', async () => {
    const path = tmp('a.asif');
    await createAsif(path, { blockCount: 100 });
    expect(await probeFormat(path)).toBe('asif');
  });

  it('takes anything without a known magic for RAW, even an empty file', async () => {
    expect(await probeFormat(file('disk.img', 'hello'))).toBe('raw');
    expect(await probeFormat(file('empty.img', '', 0))).toBe('raw');
    expect(await probeFormat(file('short.img', 'QFI', 3))).toBe('raw');
  });

  it('probes qcow2 by its magic (a stub too short for a header is refused at open)', async () => {
    const path = file('x.qcow2', Buffer.from([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]));
    expect(await probeFormat(path)).toBe('qcow2');
    await expect(openImage(path)).rejects.toBeInstanceOf(CorruptedImageError);
  });

  it.each([
    ['VHDX', 'vhdxfile'],
    ['VMDK', 'KDMV'],
    ['VMDK', '# Disk DescriptorFile\nversion=1'],
  ] as const)('refuses %s by name', async (name, head) => {
    const path = file(`x.${name}`, head);
    await expect(probeFormat(path)).rejects.toBeInstanceOf(UnsupportedFormatError);
    await expect(probeFormat(path)).rejects.toThrow(name);
  });

  it("finds DMG by the 'koly' trailer in its last 512 bytes (a trailer of unknown version is then refused)", async () => {
    const path = file('x.dmg', 'anything', 8192, 'koly');
    expect(await probeFormat(path)).toBe('dmg');
    await expect(openImage(path)).rejects.toBeInstanceOf(UnsupportedFormatError);
  });
});

describe('names against content', () => {
  it('refuses a file whose name promises another format than its content shows, naming both', async () => {
    const damaged = file('damaged.asif', 'not an asif header');
    await expect(openImage(damaged)).rejects.toThrow(/the name says ASIF but the content does not match \(it has no ASIF header and would read as RAW\)/);
    const qcowNamedRaw = file('disk.raw', Buffer.from([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]));
    await expect(openImage(qcowNamedRaw)).rejects.toBeInstanceOf(UnsupportedFormatError);
    const asifNamedQcow = tmp('asif-named.qcow2');
    await createAsif(asifNamedQcow, { blockCount: 100 });
    await expect(openImage(asifNamedQcow)).rejects.toThrow(/the name says qcow2 but the content does not match \(it is ASIF\)/);
    // Naming the format is believed; a name without a known ending says nothing.
    await (await openImage(damaged, { format: 'raw', readOnly: true })).close();
    await (await openImage(file('plain.img', 'data'), { readOnly: true })).close();
  });

  it('a probed RAW image refuses a known magic in its first sector; one opened as named RAW takes it', async () => {
    const path = file('guarded.img', 'data', 8192);
    const probed = await openImage(path);
    const magic = Buffer.alloc(512);
    magic.write('shdw', 0, 'latin1');
    await expect(probed.write(magic, 0)).rejects.toThrow(/ASIF header in the first sector/);
    await expect(probed.write(Buffer.from('QFI\xfb', 'latin1'), 0)).rejects.toThrow(/qcow2/);
    await probed.write(Buffer.from('sh'), 0);
    await probed.write(Buffer.alloc(512, 1), 512);
    await probed.close();
    const named = await openImage(path, { format: 'raw' });
    await named.write(magic, 0);
    await named.close();
  });
});

describe('openImage and createImage', () => {
  it('create and open both formats; an explicit format skips probing', async () => {
    const asif = tmp('made.asif');
    const raw = tmp('made.raw');
    await createImage(asif, { format: 'asif', blockCount: 2048, blockSize: 4096 });
    await createImage(raw, { format: 'raw', blockCount: 2048 });
    expect(statSync(raw).size).toBe(2048 * 512);
    const a = await openImage(asif, { readOnly: true });
    const r = await openImage(raw);
    expect([a.format, a.size, a.blockSize]).toEqual(['asif', 2048 * 4096, 4096]);
    expect([r.format, r.size, r.layerUUID]).toEqual(['raw', 2048 * 512, null]);
    await a.close();
    await r.close();
    const asRaw = await openImage(asif, { format: 'raw', readOnly: true });
    expect(asRaw.format).toBe('raw');
    await asRaw.close();
  });

  it('passes layer fields to ASIF and refuses them for RAW', async () => {
    const layer = tmp('layer.asif');
    await createImage(layer, { format: 'asif', blockCount: 64, layerType: 'overlay', parentUUID: '0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0' });
    const image = await openImage(layer, { readOnly: true });
    expect([image.layerType, image.parentUUID]).toEqual(['overlay', '0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0']);
    await image.close();
    await expect(createImage(tmp('l.raw'), { format: 'raw', blockCount: 64, layerType: 'cache' })).rejects.toBeInstanceOf(IncompatibleStackingError);
  });

  it('refuses bad block counts and existing files', async () => {
    for (const format of ['raw', 'asif'] as const) {
      await expect(createImage(tmp(`zero.${format}`), { format, blockCount: 0 })).rejects.toBeInstanceOf(InvalidBlockCountError);
      const path = file(`taken.${format}`, 'mine');
      await expect(createImage(path, { format, blockCount: 8 })).rejects.toMatchObject({ code: 'EEXIST' });
      await createImage(path, { format, blockCount: 8, overwrite: true });
      expect(await probeFormat(path)).toBe(format);
    }
  });
});
