/** Facts about each file of a stack, read without trusting the chain (for info and map). */
import { IncompatibleStackingError } from '../block/errors.js';
import type { Layer, LayerDetails, ParentPin } from '../formats/layer.js';
import { AsifImage } from '../formats/asif/index.js';
import { openImage } from '../formats/open-image.js';
import { displaySource, isRemoteSource, openRemote, type RemoteOptions } from '../remote/index.js';
import { checkChain, linksOf } from '../stack/chain.js';
import { refuseDuplicates } from '../stack/disk-image.js';
import type { LayerSpec } from '../stack/layer-spec.js';

export interface LayerReport {
  path: string;
  format: string;
  virtualSize: number;
  blockSize: number;
  blockCount: number;
  fileSize: number;
  layerType: string | null;
  layerUUID: string | null;
  parentUUID: string | null;
  /** What identifies this layer to a child (non-ASIF layers). */
  pin?: ParentPin;
  /** What this layer recorded of its non-ASIF parent. */
  parentPin?: ParentPin;
  chunkSize?: number;
  allocatedBytes?: number;
  stableUUID?: string;
  /** Format-specific facts (codecs, backing files, ...). */
  details?: LayerDetails;
}

export async function describeOpenLayer(layer: Layer): Promise<LayerReport> {
  const details = await layer.details?.();
  const base: LayerReport = {
    path: layer.path,
    format: layer.format,
    virtualSize: layer.size,
    blockSize: layer.blockSize,
    blockCount: layer.size / layer.blockSize,
    fileSize: layer instanceof AsifImage ? await layer.fileSize() : typeof details?.fileSize === 'number' ? details.fileSize : layer.size,
    layerType: layer.layerType,
    layerUUID: layer.layerUUID,
    parentUUID: layer.parentUUID,
    ...(details ? { details } : {}),
  };
  const pin = await layer.pin();
  if (pin) base.pin = pin;
  if (layer.parentPin) base.parentPin = layer.parentPin;
  if (layer instanceof AsifImage) {
    base.chunkSize = layer.chunkSize;
    base.allocatedBytes = layer.allocatedBytes();
    base.stableUUID = layer.stableUUID;
  }
  return base;
}

/** Opens every file (or a remote base) read-only; runs `use` with them; closes them whatever happens. */
export async function withLayers<T>(specs: readonly LayerSpec[], use: (layers: Layer[]) => Promise<T>, remote?: RemoteOptions): Promise<T> {
  await refuseDuplicates(specs);
  const layers: Layer[] = [];
  try {
    for (const [i, spec] of specs.entries()) {
      if (!isRemoteSource(spec.path)) layers.push(await openImage(spec.path, { readOnly: true, format: spec.format, noBacking: spec.noBacking }));
      else if (i > 0) throw new IncompatibleStackingError(displaySource(spec.path), 'a remote base can only be the base of a stack');
      else layers.push(await openRemote(spec.path, remote));
    }
    return await use(layers);
  } finally {
    await Promise.allSettled(layers.map((l) => l.close()));
  }
}

/** Whether the files form a valid stack: why not, and what could not be checked. */
export async function chainReport(layers: readonly Layer[]): Promise<{ problem: string | null; warnings: string[] }> {
  try {
    return { problem: null, warnings: checkChain(await linksOf(layers), false) };
  } catch (err) {
    return { problem: err instanceof Error ? err.message : String(err), warnings: [] };
  }
}
