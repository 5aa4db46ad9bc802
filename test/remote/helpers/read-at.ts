/** Reads `length` bytes of a layer at `offset` into a new buffer. */
import type { Layer } from '../../../src/formats/layer.js';

export async function readAt(layer: Layer, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  await layer.read(buf, offset);
  return buf;
}
