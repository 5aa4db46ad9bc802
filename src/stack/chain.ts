/**
 * The rules that decide whether layers may be stacked, in the order given (bottom first).
 * DiskImageKit's: only ASIF layers go above the base; at most one cache layer; each layer
 * names the layer below by UUID (its parent UUID); a cache layer is never the writable top.
 * Ours, for a base that has no ASIF UUID (RAW, foreign, remote): the layer records the base's
 * pin (size, modification time, inode, ETag...) when it is made and the base must still match
 * it, so a base that was written, replaced or resized since is refused instead of showing the
 * layer mixed data. A layer over such a base that recorded no pin (Apple's tools record none)
 * opens with a warning that the base cannot be checked.
 * Every violation is an IncompatibleStackingError naming the file.
 */
import { ImageError, IncompatibleStackingError } from '../block/errors.js';
import type { Layer, ParentPin } from '../formats/layer.js';

/** What the rules need to know of a layer, with its pin read now. */
export type ChainLink = Pick<Layer, 'path' | 'format' | 'layerUUID' | 'parentUUID' | 'layerType'> & {
  readonly parentPin?: ParentPin | null;
  /** The layer's current pin (`Layer.pin()`), which the layer above must have recorded. */
  readonly pin: ParentPin | null;
};

export async function linkOf(layer: Layer): Promise<ChainLink> {
  return {
    path: layer.path,
    format: layer.format,
    layerUUID: layer.layerUUID,
    parentUUID: layer.parentUUID,
    layerType: layer.layerType,
    parentPin: layer.parentPin ?? null,
    pin: await layer.pin(),
  };
}

export function linksOf(layers: readonly Layer[]): Promise<ChainLink[]> {
  return Promise.all(layers.map(linkOf));
}

/** What a new layer on `below` records of it: its UUID (ASIF) or its pin (anything else). */
export async function parentRecordOf(below: Layer): Promise<{ parentUUID: string | null; parentPin: ParentPin | null }> {
  if (below.format === 'asif') return { parentUUID: below.layerUUID, parentPin: null };
  const pin = await below.pin();
  if (!pin) throw new ImageError(below.path, 'cannot be identified, so no layer can be stacked on it');
  return { parentUUID: null, parentPin: pin };
}

/** How a base is named in messages: "RAW base.raw". */
function named(link: ChainLink): string {
  return `${link.format === 'asif' ? 'ASIF' : link.format.toUpperCase()} ${link.path}`;
}

/**
 * Throws unless `below` may carry `layer` directly on top of it; returns a warning when the
 * link holds but cannot be checked.
 */
export function checkLink(below: ChainLink, layer: ChainLink): string | null {
  if (layer.format !== 'asif') {
    throw new IncompatibleStackingError(layer.path, `a ${layer.format.toUpperCase()} image can only be the base of a stack, not a layer above ${below.path}`);
  }
  if (below.format === 'asif') {
    if (layer.parentUUID !== below.layerUUID) {
      throw new IncompatibleStackingError(
        layer.path,
        `its parent UUID is ${layer.parentUUID ?? 'none (a standalone image)'} but the layer below (${below.path}) has ${below.layerUUID}: it was made for another parent, or the parent changed since`,
      );
    }
    return null;
  }
  if (layer.parentUUID !== null) {
    throw new IncompatibleStackingError(
      layer.path,
      `its parent UUID is ${layer.parentUUID}, an ASIF layer, but the layer below is the ${named(below)}: it was made for another parent`,
    );
  }
  if (!layer.parentPin) {
    return `${layer.path} records nothing that identifies its base (made by Apple's tools or an older stackbd): stackbd cannot check that ${below.path} is the base it was made on`;
  }
  const changed = pinMismatch(layer.parentPin, below.pin);
  if (changed) {
    throw new IncompatibleStackingError(
      layer.path,
      `it was made on another base, or the ${named(below)} changed since it was made (${changed}); if ${below.path} holds exactly what the layer was made on, re-point the layer with \`stackbd rebase --unsafe\``,
    );
  }
  return null;
}

/** Throws unless the whole list may be stacked; returns the warnings of links that cannot be checked. */
export function checkChain(links: readonly ChainLink[], writableTop: boolean): string[] {
  if (links.length === 0) throw new RangeError('a stack needs at least one image');
  let cache: ChainLink | null = null;
  const warnings: string[] = [];
  links.forEach((layer, i) => {
    if (layer.layerType === 'cache') {
      if (cache) throw new IncompatibleStackingError(layer.path, `a stack takes one cache layer and ${cache.path} is one already`);
      if (i === 0) throw new IncompatibleStackingError(layer.path, 'a cache layer needs a layer below it to cache');
      cache = layer;
    }
    if (i > 0) {
      const warning = checkLink(links[i - 1], layer);
      if (warning) warnings.push(warning);
    }
  });
  const top = links[links.length - 1];
  if (writableTop && top.layerType === 'cache') {
    throw new IncompatibleStackingError(top.path, 'a cache layer cannot be the writable top of a stack: append an overlay on it, or open read-only');
  }
  return warnings;
}

/** Words for the fields layers put in their pins; other fields are named as they are. */
const PIN_FIELDS: Readonly<Record<string, string>> = {
  size: 'size in bytes',
  mtime: 'modification time',
  inode: 'inode (which file it is)',
  etag: 'ETag',
  lastModified: 'Last-Modified',
};

function showPinValue(key: string, value: string | number): string {
  if (key === 'mtime' && typeof value === 'string' && /^\d+$/.test(value)) {
    const ns = BigInt(value);
    return `${new Date(Number(ns / 1_000_000n)).toISOString().replace('Z', '')}${String(ns % 1_000_000n).padStart(6, '0')}Z`;
  }
  return String(value);
}

/** Null when `current` matches every field `recorded` holds; otherwise what differs, in words. */
export function pinMismatch(recorded: ParentPin, current: ParentPin | null): string | null {
  const differences: string[] = [];
  for (const [key, value] of Object.entries(recorded)) {
    const now = current?.[key];
    const what = PIN_FIELDS[key] ?? key;
    if (now === undefined) differences.push(`${what} was recorded as ${showPinValue(key, value)} and cannot be read now`);
    else if (now !== value) differences.push(`${what} was ${showPinValue(key, value)}, now ${showPinValue(key, now)}`);
  }
  return differences.length > 0 ? differences.join('; ') : null;
}
