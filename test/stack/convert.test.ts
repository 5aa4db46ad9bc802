/**
 * Pipelined convert and commit over real images: a RAW base with holes under an ASIF overlay
 * holding data, zeros and discards. Outputs read like the stack whatever the number of pieces
 * in flight (RAW outputs are byte-identical, DMG outputs decode to the same disk), stay sparse,
 * and a layer whose read fails midway leaves no output file behind and no hanging promise.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { RequestError } from '../../src/block/errors.js';
import { openDmg } from '../../src/formats/dmg/index.js';
import type { Layer } from '../../src/formats/layer.js';
import { openImage } from '../../src/formats/open-image.js';
import { commitTop } from '../../src/stack/commit.js';
import { convertStack } from '../../src/stack/convert.js';
import { DiskImage } from '../../src/stack/disk-image.js';
import { Stack } from '../../src/stack/stack.js';
import { useTmpDir } from '../formats/helpers/tmp-dir.js';

const tmp = useTmpDir('convert');
const MiB = 1024 * 1024;
const SIZE = 24 * MiB;

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function readAll(layer: { size: number; read(buf: Buffer, offset: number): Promise<unknown> }): Promise<Buffer> {
  const out = Buffer.alloc(layer.size);
  for (let at = 0; at < layer.size; at += MiB) await layer.read(out.subarray(at, Math.min(at + MiB, layer.size)), at);
  return out;
}

let made = 0;
/** base.raw (64 KiB of data every 256 KiB, holes between) + overlay.asif with writes; returns paths and the model. */
async function makeStack(): Promise<{ paths: string[]; model: Buffer }> {
  const id = made++;
  const base = tmp(`base-${id}.raw`);
  const model = Buffer.alloc(SIZE);
  const file = await fs.open(base, 'w');
  await file.truncate(SIZE);
  for (let at = 0; at < SIZE; at += 256 * 1024) {
    const data = randomBytes(64 * 1024);
    await file.write(data, 0, data.length, at);
    data.copy(model, at);
  }
  await file.close();
  const overlay = tmp(`overlay-${id}.asif`);
  let image = await DiskImage.open(base, { mode: 'readWrite' });
  image = await image.appending({ path: overlay, type: 'overlay' });
  for (const [at, n] of [[5 * MiB + 512, 3 * MiB], [100 * 1024, 4096], [SIZE - 1536, 1024]] as const) {
    const data = randomBytes(n);
    await image.stack.write(data, at);
    data.copy(model, at);
  }
  await image.stack.writeZeroes(1 * MiB, 2 * MiB);
  model.fill(0, 1 * MiB, 3 * MiB);
  // Data that is all zeros: read as data, never written to the output.
  await image.stack.write(Buffer.alloc(512 * 1024), 12 * MiB);
  model.fill(0, 12 * MiB, 12 * MiB + 512 * 1024);
  await image.close();
  return { paths: [base, overlay], model };
}

/** A layer whose reads that touch `failAt` fail (after a turn of the event loop). */
function failingAt(layer: Layer, failAt: number): Layer {
  const wrapper = Object.create(layer) as Layer;
  wrapper.read = async (buf: Buffer, offset: number) => {
    await new Promise((resolve) => setImmediate(resolve));
    if (offset <= failAt && failAt < offset + buf.length) throw new RequestError('EIO', `injected read failure at ${failAt}`);
    return layer.read(buf, offset);
  };
  return wrapper;
}

async function exists(path: string): Promise<boolean> {
  return fs.stat(path).then(() => true, () => false);
}

describe('convert, pipelined', () => {
  it('writes the same RAW, ASIF and DMG contents with 1 or 8 pieces in flight, and keeps RAW sparse', async () => {
    const { paths, model } = await makeStack();
    const image = await DiskImage.open(paths);
    const hashes = new Map<string, string>();
    try {
      for (const inFlight of [1, 8]) {
        for (const format of ['raw', 'asif', 'dmg'] as const) {
          const out = tmp(`out-${inFlight}.${format}`);
          const seen: number[] = [];
          const result = await convertStack(image.stack, out, { format, inFlight, pieceBytes: 256 * 1024, onProgress: (d) => seen.push(d) });
          expect(seen[seen.length - 1]).toBe(SIZE);
          const layer = format === 'dmg' ? await openDmg(out) : await openImage(out, { readOnly: true, format });
          try {
            expect(sha(await readAll(layer))).toBe(sha(model));
          } finally {
            await layer.close();
          }
          if (format === 'raw') {
            const bytes = await fs.readFile(out);
            hashes.set(String(inFlight), sha(bytes));
            const st = await fs.stat(out);
            // Only the data is allocated: a quarter of the base plus the overlay's writes, not zeros.
            expect(st.blocks * 512).toBeLessThan(SIZE / 2);
            expect(result.dataBytes).toBeLessThan(SIZE / 2);
          }
        }
      }
    } finally {
      await image.close();
    }
    expect(hashes.get('8')).toBe(hashes.get('1'));
  });

  for (const format of ['raw', 'asif', 'dmg'] as const) {
    it(`leaves no ${format.toUpperCase()} output behind when a layer's read fails midway`, async () => {
      const { paths } = await makeStack();
      const base = failingAt(await openImage(paths[0], { readOnly: true, format: 'raw' }), 16 * MiB + 100);
      const overlay = await openImage(paths[1], { readOnly: true, format: 'asif' });
      const stack = new Stack([base, overlay]);
      const out = tmp(`failed.${format}`);
      try {
        await expect(convertStack(stack, out, { format, inFlight: 6, pieceBytes: 128 * 1024 })).rejects.toThrow('injected read failure');
        expect(await exists(out)).toBe(false);
        // The same name can be written again at once: nothing holds it.
        await fs.writeFile(out, 'x');
      } finally {
        await stack.close();
      }
    });
  }
});

describe('commit, pipelined', () => {
  it('commits what the stack reads into the base, with 1 or 8 pieces in flight', async () => {
    for (const inFlight of [1, 8]) {
      const { paths, model } = await makeStack();
      const result = await commitTop(paths, { inFlight, pieceBytes: 128 * 1024 });
      expect(result.bytesZeroed).toBe(2 * MiB);
      const bytes = await fs.readFile(paths[0]);
      expect(sha(bytes)).toBe(sha(model));
    }
  });
});
