/**
 * A snapshot of a stack that is being served: a new ASIF overlay is created on the current top
 * (recording its layer UUID as the parent) and becomes the new top. The old top stays open and
 * becomes a lower layer; the caller (the export) guarantees no write is running meanwhile.
 */
import { IncompatibleStackingError } from '../block/errors.js';
import { createImage, openImage } from '../formats/open-image.js';
import { parentRecordOf } from './chain.js';
import type { Stack } from './stack.js';

export async function appendLiveOverlay(stack: Stack, path: string): Promise<Stack> {
  const top = stack.top;
  if (top.layerType === 'cache') throw new IncompatibleStackingError(top.path, 'the top is a cache layer: there is nothing to snapshot');
  await createImage(path, {
    format: 'asif',
    blockCount: top.size / top.blockSize,
    blockSize: top.format === 'asif' && top.blockSize === 4096 ? 4096 : 512,
    layerType: 'overlay',
    ...(await parentRecordOf(top)),
  });
  const layer = await openImage(path, { readOnly: false, format: 'asif' });
  return stack.withTop(layer);
}
