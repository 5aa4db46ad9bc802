/**
 * qcow2 backing chains: composed inside the layer (bytes and map equal QEMU's for the whole
 * chain), and the rules of backing file names, formats, loops, depth and --no-backing.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IncompatibleStackingError, UnsupportedFormatError } from '../../../src/block/errors.js';
import type { Layer } from '../../../src/formats/layer.js';
import { openImage } from '../../../src/formats/open-image.js';
import { MAX_BACKING_DEPTH, openQcow2, type Qcow2Image } from '../../../src/formats/qcow2/index.js';
import { makeTempDir, removeDir } from '../../helpers/tmp.js';
import { layerBytes, layerMap, qemuBytes, qemuImg, qemuIo, qemuMap, requireQemu } from './qemu-oracle.js';

const MiB = 1024 * 1024;

describe('qcow2 backing chains', () => {
  let dir: string;
  const p = (name: string): string => path.join(dir, name);

  beforeAll(async () => {
    requireQemu();
    dir = await makeTempDir('stackbd-qcow2-backing-');
  });
  afterAll(() => removeDir(dir));

  async function expectLikeQemu(image: string): Promise<void> {
    const layer = await openImage(image, { readOnly: true });
    try {
      const want = await qemuBytes(image, p('oracle.raw'));
      expect(layer.size).toBe(want.length);
      expect((await layerBytes(layer)).equals(want)).toBe(true);
      expect(await layerMap(layer)).toEqual(await qemuMap(image));
    } finally {
      await layer.close();
    }
  }

  /** Rewrites the backing file name stored in a qcow2 header (same length or shorter). */
  async function setBackingName(image: string, name: string): Promise<void> {
    const f = await fs.open(image, 'r+');
    try {
      const head = Buffer.alloc(20);
      await f.read(head, 0, 20, 0);
      const at = Number(head.readBigUInt64BE(8));
      const bytes = Buffer.from(name);
      await f.write(bytes, 0, bytes.length, at);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(bytes.length);
      await f.write(len, 0, 4, 16);
    } finally {
      await f.close();
    }
  }

  it('a chain of three qcow2 images reads and maps as QEMU composes it', async () => {
    await qemuImg('create', '-f', 'qcow2', p('base.qcow2'), String(8 * MiB));
    await qemuIo(p('base.qcow2'), ['write -P 0x01 0 4M', 'write -z 5M 1M', 'write -P 0x0f 7M 1M']);
    await qemuImg('create', '-f', 'qcow2', '-o', 'extended_l2=on', '-b', 'base.qcow2', '-F', 'qcow2', p('mid.qcow2'));
    await qemuIo(p('mid.qcow2'), ['write -P 0x02 1M 6k', 'write -z 2M 64k', 'discard 3M 512k', 'write -P 0x12 6M 64k']);
    await qemuImg('create', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', p('top.qcow2'), String(10 * MiB));
    await qemuIo(p('top.qcow2'), ['write -P 0x03 1032k 64k', 'write -z 0 64k', 'write -P 0x13 9M 4k', 'write -z 7M 64k']);
    await expectLikeQemu(p('mid.qcow2'));
    await expectLikeQemu(p('top.qcow2'));

    const top = await openQcow2(p('top.qcow2'));
    try {
      const details = await top.details();
      expect(details.backingChain).toEqual([
        { name: 'mid.qcow2', path: p('mid.qcow2'), format: 'qcow2', formatFrom: 'header' },
        { name: 'base.qcow2', path: p('base.qcow2'), format: 'qcow2', formatFrom: 'header' },
      ]);
      // The pin changes when any file of the chain changes.
      const before = await top.pin();
      await qemuIo(p('base.qcow2'), ['write -P 0x04 0 4k']);
      const after = await top.pin();
      expect(after.mtime).toBe(before.mtime);
      expect(after.backing).not.toBe(before.backing);
    } finally {
      await top.close();
    }
  });

  it('a raw backing file, and one smaller than the image', async () => {
    const raw = Buffer.alloc(3 * MiB);
    raw.fill(0x21, 0, MiB);
    raw.fill(0x22, 2 * MiB + 512);
    await fs.writeFile(p('base.raw'), raw);
    await qemuImg('create', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', p('over-raw.qcow2'), String(5 * MiB));
    await qemuIo(p('over-raw.qcow2'), ['write -P 0x31 512k 1M', 'write -P 0x32 4M 4k']);
    await expectLikeQemu(p('over-raw.qcow2'));
  });

  it('a backing file without a format extension is probed (qcow2 magic, else raw)', async () => {
    await qemuImg('create', '-f', 'qcow2', p('probe-base.qcow2'), String(2 * MiB));
    await qemuIo(p('probe-base.qcow2'), ['write -P 0x41 0 1M']);
    await qemuImg('create', '-f', 'qcow2', '-o', 'compat=0.10', '-b', 'probe-base.qcow2', '-F', 'qcow2', p('probe-top.qcow2'));
    // Version 2 keeps the format in an extension too; drop the extension's type to 'unknown'.
    const bytes = await fs.readFile(p('probe-top.qcow2'));
    const at = bytes.indexOf(Buffer.from([0xe2, 0x79, 0x2a, 0xca]));
    expect(at).toBeGreaterThan(0);
    bytes.writeUInt32BE(0x12345678, at);
    await fs.writeFile(p('probe-top.qcow2'), bytes);
    const top = await openQcow2(p('probe-top.qcow2'));
    try {
      expect(top.backingChain()[0]).toMatchObject({ format: 'qcow2', formatFrom: 'probe' });
      const buf = Buffer.alloc(4096);
      await top.read(buf, 0);
      expect(buf.every((b) => b === 0x41)).toBe(true);
    } finally {
      await top.close();
    }
  });

  it('an absolute backing path to an existing file is followed', async () => {
    await qemuImg('create', '-f', 'qcow2', '-b', p('base.qcow2'), '-F', 'qcow2', p('abs.qcow2'));
    await expectLikeQemu(p('abs.qcow2'));
  });

  it('noBacking refuses an image with a backing file, naming it', async () => {
    await expect(openQcow2(p('top.qcow2'), { noBacking: true })).rejects.toThrow(IncompatibleStackingError);
    await expect(openQcow2(p('top.qcow2'), { noBacking: true })).rejects.toThrow(/backing file \(mid\.qcow2\)/);
    const alone = await openQcow2(p('base.qcow2'), { noBacking: true });
    await alone.close();
    // The same through openImage, probed or named.
    await expect(openImage(p('top.qcow2'), { noBacking: true })).rejects.toThrow(/backing file \(mid\.qcow2\)/);
    await expect(openImage(p('top.qcow2'), { noBacking: true, format: 'qcow2' })).rejects.toThrow(IncompatibleStackingError);
  });

  it('protocol and json: backing names are refused, not followed', async () => {
    for (const name of ['nbd://127.0.0.1:1/x', 'http:/x', 'json:{"file":{}}', 'file:base.qcow2']) {
      await qemuImg('create', '-f', 'qcow2', '-u', '-b', 'base.qcow2', '-F', 'qcow2', p('proto.qcow2'), String(MiB));
      await setBackingName(p('proto.qcow2'), name);
      const err = await openQcow2(p('proto.qcow2')).catch((e: unknown) => e);
      expect(err, name).toBeInstanceOf(UnsupportedFormatError);
      expect(String(err)).toContain(name.slice(0, 4));
    }
  });

  it('a missing backing file, an unsupported backing format and a loop are refused', async () => {
    await qemuImg('create', '-f', 'qcow2', '-u', '-b', 'missing.qcow2', '-F', 'qcow2', p('orphan.qcow2'), String(MiB));
    await expect(openQcow2(p('orphan.qcow2'))).rejects.toThrow(/missing\.qcow2 .*does not exist/);

    await qemuImg('create', '-f', 'qcow2', '-u', '-b', 'base.qcow2', '-F', 'vmdk', p('vmdk-backed.qcow2'), String(MiB));
    await expect(openQcow2(p('vmdk-backed.qcow2'))).rejects.toThrow(UnsupportedFormatError);
    await expect(openQcow2(p('vmdk-backed.qcow2'))).rejects.toThrow(/format vmdk/);

    // loop-a → loop-b → loop-a
    await qemuImg('create', '-f', 'qcow2', p('loop-a.qcow2'), String(MiB));
    await qemuImg('create', '-f', 'qcow2', '-u', '-b', 'loop-a.qcow2', '-F', 'qcow2', p('loop-b.qcow2'), String(MiB));
    await qemuImg('rebase', '-u', '-f', 'qcow2', '-b', 'loop-b.qcow2', '-F', 'qcow2', p('loop-a.qcow2'));
    await expect(openQcow2(p('loop-a.qcow2'))).rejects.toThrow(/loops/);
    // An image that names itself.
    await qemuImg('rebase', '-u', '-f', 'qcow2', '-b', 'loop-a.qcow2', '-F', 'qcow2', p('loop-a.qcow2'));
    await expect(openQcow2(p('loop-a.qcow2'))).rejects.toThrow(IncompatibleStackingError);
  });

  it(`a chain deeper than ${MAX_BACKING_DEPTH} backing files is refused; one of exactly that depth opens`, async () => {
    await qemuImg('create', '-f', 'qcow2', p('d0.qcow2'), String(MiB));
    await qemuIo(p('d0.qcow2'), ['write -P 0x70 0 4k']);
    for (let i = 1; i <= MAX_BACKING_DEPTH + 1; i++) {
      await qemuImg('create', '-f', 'qcow2', '-u', '-b', `d${i - 1}.qcow2`, '-F', 'qcow2', p(`d${i}.qcow2`), String(MiB));
    }
    const deepest: Layer = await openQcow2(p(`d${MAX_BACKING_DEPTH}.qcow2`));
    try {
      expect((deepest as Qcow2Image).backingChain()).toHaveLength(MAX_BACKING_DEPTH);
      const buf = Buffer.alloc(4096);
      await deepest.read(buf, 0);
      expect(buf.every((b) => b === 0x70)).toBe(true);
    } finally {
      await deepest.close();
    }
    await expect(openQcow2(p(`d${MAX_BACKING_DEPTH + 1}.qcow2`))).rejects.toThrow(/deeper than 16/);
  });
});
