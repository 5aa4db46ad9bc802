/**
 * Re-points an overlay (or cache) layer at a new parent, as `qemu-img rebase` does:
 *
 * - safe (`from` given): the overlay keeps reading exactly as it did on its old parent. Every
 *   range the overlay does not hold is read through the old stack and through the new one;
 *   where they differ, the old bytes are copied into the overlay. Then the overlay records the
 *   new parent. The old stack must still be valid (the overlay stacks on it).
 * - unsafe: only the record changes. The user vouches that the new parent reads exactly like the
 *   one the overlay was made on (a copied or moved base, or a base whose identity changed
 *   without its content changing).
 *
 * The overlay's own layer UUID does not change: what it reads as does not change either, so
 * layers stacked on it stay valid.
 */
import { IncompatibleStackingError } from '../block/errors.js';
import { openAsif } from '../formats/asif/index.js';
import type { AsifImage } from '../formats/asif/index.js';
import { isAllZero } from './bulk-copy.js';
import { checkLink, linkOf, parentRecordOf } from './chain.js';
import { DiskImage } from './disk-image.js';
import type { LayerSpec } from './layer-spec.js';

export interface RebaseOptions {
  /** The stack the overlay stands on now (safe mode); absent for an unsafe rebase. */
  from?: readonly LayerSpec[];
  onProgress?: (done: number, total: number) => void;
  onWarning?: (message: string) => void;
}

export interface RebaseResult {
  overlay: string;
  parent: string;
  /** Bytes copied into the overlay because the old and new parents differ there. */
  bytesCopied: number;
  /** What the overlay now records: the new parent's UUID, or its pin. */
  record: string;
}

const PIECE = 4 * 1024 * 1024;

export async function rebaseLayer(onto: readonly LayerSpec[], overlayPath: string, options: RebaseOptions = {}): Promise<RebaseResult> {
  const target = await DiskImage.open(onto, { mode: 'readOnly', onWarning: options.onWarning, requireLocks: true });
  const old = options.from ? await DiskImage.open(options.from, { mode: 'readOnly', onWarning: options.onWarning, requireLocks: true }).catch(async (err: unknown) => {
    await target.close();
    throw err;
  }) : null;
  let overlay: AsifImage | null = null;
  try {
    overlay = await openAsif(overlayPath, { readOnly: false, keepLayerUUID: true });
    const parent = target.stack.top;
    if (overlay.layerType === null) throw new IncompatibleStackingError(overlay.path, 'is a standalone image, not a layer: there is no parent to change');
    if (overlay.layerType === 'cache' && target.stack.hasCache) {
      throw new IncompatibleStackingError(overlay.path, 'is a cache layer and the new stack has one already');
    }
    if (old) checkLink(await linkOf(old.stack.top), await linkOf(overlay));
    if (parent.size !== overlay.size) {
      options.onWarning?.(`${overlay.path} is ${overlay.size} bytes and its new parent ${parent.path} ${parent.size}: what lies past the shorter one reads as zeros`);
    }
    const bytesCopied = old ? await copyDifferences(overlay, old, target, options.onProgress) : 0;
    const record = await parentRecordOf(parent);
    await overlay.recordParent(record.parentUUID, record.parentPin);
    await overlay.flush();
    // The new link must now hold; a failure here is a bug, not a user error.
    checkLink(await linkOf(parent), await linkOf(overlay));
    return {
      overlay: overlay.path,
      parent: parent.path,
      bytesCopied,
      record: record.parentUUID ? `parent UUID ${record.parentUUID}` : `pin ${JSON.stringify(record.parentPin)}`,
    };
  } finally {
    await overlay?.close().catch(() => undefined);
    await old?.close().catch(() => undefined);
    await target.close().catch(() => undefined);
  }
}

/** Copies into `overlay`, where it holds nothing, the bytes in which the old stack and the new one differ. */
async function copyDifferences(overlay: AsifImage, old: DiskImage, onto: DiskImage, onProgress?: (done: number, total: number) => void): Promise<number> {
  const bs = overlay.blockSize;
  const size = overlay.size;
  const before = Buffer.allocUnsafe(PIECE);
  const after = Buffer.allocUnsafe(PIECE);
  let copied = 0;
  for (let offset = 0; offset < size; offset += PIECE) {
    const length = Math.min(PIECE, size - offset);
    for (const run of await overlay.map(offset, length)) {
      if (run.state !== 'absent') continue;
      const a = before.subarray(0, run.length);
      const b = after.subarray(0, run.length);
      await Promise.all([readOrZeros(old, a, run.offset), readOrZeros(onto, b, run.offset)]);
      // Compare and copy sector by sector: the overlay keeps whole sectors.
      for (let at = 0; at < run.length; at += bs) {
        const end = Math.min(at + bs, run.length);
        if (a.subarray(at, end).equals(b.subarray(at, end))) continue;
        let stop = end;
        while (stop < run.length && !a.subarray(stop, Math.min(stop + bs, run.length)).equals(b.subarray(stop, Math.min(stop + bs, run.length)))) {
          stop = Math.min(stop + bs, run.length);
        }
        const data = a.subarray(at, stop);
        // Zeros over a new parent that has data: the overlay must say zeros, not fall through.
        if (isAllZero(data)) await overlay.zero(run.offset + at, data.length);
        else await overlay.write(data, run.offset + at);
        copied += data.length;
        at = stop - bs;
      }
    }
    onProgress?.(offset + length, size);
  }
  return copied;
}

/** The stack's bytes, with zeros past its end (a parent smaller than the overlay). */
async function readOrZeros(image: DiskImage, buf: Buffer, offset: number): Promise<void> {
  const inside = Math.max(0, Math.min(buf.length, image.stack.size - offset));
  if (inside > 0) await image.stack.read(buf.subarray(0, inside), offset);
  buf.fill(0, inside);
}
