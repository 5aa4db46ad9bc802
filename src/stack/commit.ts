/**
 * Merges the top layer of a stack into the layer below it: every range the top holds (data, or
 * zeros it hides the layers below with) is written into the layer below; ranges it does not
 * hold are left alone. Afterwards the layer below reads like the stack did, its layer UUID has
 * changed (it was written), and the old top no longer stacks on it. Other layers made on the
 * layer below would go stale the same way: they are looked for beside the stack's files and
 * the commit is refused while there are any, unless `force`. The copy is pipelined
 * (bulk-copy.ts): several pieces of the top are read and written at once.
 */
import path from 'node:path';
import { IncompatibleStackingError } from '../block/errors.js';
import type { Layer } from '../formats/layer.js';
import { openImage } from '../formats/open-image.js';
import { findChildren } from './find-children.js';
import { toLayerSpec, type LayerSpec } from './layer-spec.js';
import { bulkCopy, type BulkCopyOptions } from './bulk-copy.js';
import { checkChain, linksOf } from './chain.js';

export interface CommitOptions extends BulkCopyOptions {
  /** Commit even when other layers stack on the target (they go stale). */
  force?: boolean;
  onWarning?: (message: string) => void;
}

export interface CommitResult {
  top: string;
  target: string;
  bytesWritten: number;
  bytesZeroed: number;
}

export async function commitTop(sources: ReadonlyArray<string | LayerSpec>, options: CommitOptions = {}): Promise<CommitResult> {
  const specs = sources.map((s) => toLayerSpec(s));
  if (specs.length < 2) throw new RangeError('commit needs a stack of at least two images');
  const layers: Layer[] = [];
  try {
    for (const [i, spec] of specs.entries()) {
      layers.push(await openImage(spec.path, { readOnly: i !== specs.length - 2, format: spec.format }));
    }
    for (const w of checkChain(await linksOf(layers), false)) options.onWarning?.(w);
    const top = layers[layers.length - 1];
    const target = layers[layers.length - 2];
    if (target.layerType === 'cache') {
      throw new IncompatibleStackingError(target.path, 'the layer below the top is a cache layer: commit into a cache would be lost');
    }
    // A read-only format (DMG) opened for writing is still read-only: refuse before writing anything.
    if (target.readOnly) {
      throw new IncompatibleStackingError(target.path, `a ${target.format.toUpperCase()} image cannot be written: commit needs a writable layer below the top (convert the stack instead)`);
    }
    const others = await findChildren(target, specs.map((s) => path.dirname(s.path)), [top.path]);
    if (others.length > 0) {
      const stale = `${others.join(', ')} also stack${others.length === 1 ? 's' : ''} on it and would go stale (refused when opened)`;
      if (!options.force) throw new IncompatibleStackingError(target.path, `${stale}: commit with --force to go on anyway`);
      options.onWarning?.(`${target.path}: ${stale}`);
    }
    if (top.size > target.size) await target.truncate(top.size);
    let bytesWritten = 0;
    let bytesZeroed = 0;
    const sink = {
      write: (data: Buffer, at: number) => {
        bytesWritten += data.length;
        return target.write(data, at);
      },
      zero: (at: number, length: number) => {
        bytesZeroed += length;
        return target.zero(at, length);
      },
    };
    await bulkCopy(top, sink, { pieceBytes: options.pieceBytes, inFlight: options.inFlight, onProgress: options.onProgress });
    await target.flush();
    return { top: top.path, target: target.path, bytesWritten, bytesZeroed };
  } finally {
    await Promise.allSettled(layers.map((l) => l.close()));
  }
}
