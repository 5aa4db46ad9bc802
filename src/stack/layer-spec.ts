/**
 * How a layer is named: a path (or URL), optionally with the format the user vouches for. On
 * the command line, in `--export` and in the config file a format is written as a prefix,
 * `raw:disk.img`, `qcow2:/images/base`, so one syntax names the format of any layer; URLs
 * (`http:`, `s3:`, `nbd:`) are not format names and pass through unchanged.
 */
import type { ImageFormat } from '../formats/layer.js';

export interface LayerSpec {
  path: string;
  /** Open as this format instead of probing (`-f`). */
  format?: ImageFormat;
  /** Refuse a qcow2 image that names a backing file instead of opening its chain (`--no-backing`). */
  noBacking?: boolean;
}

export const IMAGE_FORMATS: readonly ImageFormat[] = ['raw', 'asif', 'dmg', 'qcow2', 'sparsebundle'];

function isImageFormat(name: string): name is ImageFormat {
  return (IMAGE_FORMATS as readonly string[]).includes(name);
}

/** `raw:disk.img` → { path: 'disk.img', format: 'raw' }; anything else is a path as given. */
export function parseLayerSpec(text: string): LayerSpec {
  const colon = text.indexOf(':');
  const prefix = colon > 0 ? text.slice(0, colon) : '';
  if (isImageFormat(prefix)) return { path: text.slice(colon + 1), format: prefix };
  return { path: text };
}

/** `noBacking`: the default for a spec that does not say (DiskImage.open's option). */
export function toLayerSpec(source: string | LayerSpec, noBacking?: boolean): LayerSpec {
  const spec = typeof source === 'string' ? { path: source } : source;
  return noBacking && spec.noBacking === undefined ? { ...spec, noBacking } : spec;
}

/** The text form of a spec, for messages and descriptions. */
export function formatLayerSpec(spec: LayerSpec): string {
  return spec.format ? `${spec.format}:${spec.path}` : spec.path;
}
