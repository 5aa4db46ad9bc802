/**
 * The rules that decide whether layers may be stacked, in the order given (bottom first).
 * DiskImageKit's: RAW (and any other format without UUIDs: remote bases) only as the base; at
 * most one cache layer; each layer names the layer below by UUID (its parent UUID), or names
 * none when the layer below is not ASIF; a cache layer is never the writable top. Every
 * violation is an IncompatibleStackingError naming the file.
 */
import { IncompatibleStackingError } from '../block/errors.js';
import type { Layer } from '../formats/layer.js';

/** What the rules need to know of a layer (an open Layer has all of it). */
export type ChainLink = Pick<Layer, 'path' | 'format' | 'layerUUID' | 'parentUUID' | 'layerType'>;

/** Throws unless `below` may carry `layer` directly on top of it. */
export function checkLink(below: ChainLink, layer: ChainLink): void {
  // Only ASIF layers have UUIDs to chain by: every other format (RAW, foreign, remote) is base-only.
  if (layer.format !== 'asif') {
    const what = layer.format === 'raw' ? 'a RAW image' : `a ${layer.format} base`;
    throw new IncompatibleStackingError(layer.path, `${what} can only be the base of a stack, not a layer above ${below.path}`);
  }
  const expected = below.format !== 'asif' ? null : below.layerUUID;
  if (layer.parentUUID !== expected) {
    const found = layer.parentUUID ?? 'none (a standalone image)';
    const wanted = expected ?? `none (${below.path} is ${below.format === 'raw' ? 'RAW' : `a ${below.format} base`})`;
    throw new IncompatibleStackingError(
      layer.path,
      `its parent UUID is ${found} but the layer below (${below.path}) needs ${wanted}: it was made for another parent, or the parent changed since`,
    );
  }
}

/** Throws unless the whole list may be stacked; `writableTop` when the top will take writes. */
export function checkChain(layers: readonly ChainLink[], writableTop: boolean): void {
  if (layers.length === 0) throw new RangeError('a stack needs at least one image');
  let cache: ChainLink | null = null;
  layers.forEach((layer, i) => {
    if (layer.layerType === 'cache') {
      if (cache) throw new IncompatibleStackingError(layer.path, `a stack takes one cache layer and ${cache.path} is one already`);
      if (i === 0) throw new IncompatibleStackingError(layer.path, 'a cache layer needs a layer below it to cache');
      cache = layer;
    }
    if (i > 0) checkLink(layers[i - 1], layer);
  });
  const top = layers[layers.length - 1];
  if (writableTop && top.layerType === 'cache') {
    throw new IncompatibleStackingError(top.path, 'a cache layer cannot be the writable top of a stack: append an overlay on it, or open read-only');
  }
}
