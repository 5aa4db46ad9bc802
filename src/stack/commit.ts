/**
 * Merges the top layer of a stack into the layer below it: every range the top holds (data, or
 * zeros it hides the layers below with) is written into the layer below; ranges it does not
 * hold are left alone. Afterwards the layer below reads like the stack did, its layer UUID has
 * changed (it was written), and the old top no longer stacks on it.
 */
import { IncompatibleStackingError } from '../block/errors.js';
import type { Layer } from '../formats/layer.js';
import { openImage } from '../formats/open-image.js';
import { checkChain } from './chain.js';

export interface CommitOptions {
  onProgress?: (done: number, total: number) => void;
}

const PIECE = 4 * 1024 * 1024;

export interface CommitResult {
  top: string;
  target: string;
  bytesWritten: number;
  bytesZeroed: number;
}

export async function commitTop(paths: readonly string[], options: CommitOptions = {}): Promise<CommitResult> {
  if (paths.length < 2) throw new RangeError('commit needs a stack of at least two images');
  const layers: Layer[] = [];
  try {
    for (const [i, path] of paths.entries()) {
      layers.push(await openImage(path, { readOnly: i !== paths.length - 2 }));
    }
    checkChain(layers, false);
    const top = layers[layers.length - 1];
    const target = layers[layers.length - 2];
    if (target.layerType === 'cache') {
      throw new IncompatibleStackingError(target.path, 'the layer below the top is a cache layer: commit into a cache would be lost');
    }
    // A read-only format (DMG) opened for writing is still read-only: refuse before writing anything.
    if (target.readOnly) {
      throw new IncompatibleStackingError(target.path, `a ${target.format.toUpperCase()} image cannot be written: commit needs a writable layer below the top (convert the stack instead)`);
    }
    if (top.size > target.size) await target.truncate(top.size);
    let bytesWritten = 0;
    let bytesZeroed = 0;
    const buf = Buffer.allocUnsafe(PIECE);
    for (let offset = 0; offset < top.size; offset += PIECE) {
      const length = Math.min(PIECE, top.size - offset);
      for (const run of await top.map(offset, length)) {
        if (run.state === 'data') {
          const piece = buf.subarray(0, run.length);
          await top.read(piece, run.offset);
          await target.write(piece, run.offset);
          bytesWritten += run.length;
        } else if (run.state === 'zero') {
          await target.zero(run.offset, run.length);
          bytesZeroed += run.length;
        }
      }
      options.onProgress?.(offset + length, top.size);
    }
    await target.flush();
    return { top: top.path, target: target.path, bytesWritten, bytesZeroed };
  } finally {
    await Promise.allSettled(layers.map((l) => l.close()));
  }
}
