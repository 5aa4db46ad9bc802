/** Facts about each file of a stack, read without trusting the chain (for info and map). */
import { IncompatibleStackingError } from '../block/errors.js';
import type { Layer, LayerDetails } from '../formats/layer.js';
import { AsifImage } from '../formats/asif/index.js';
import { openImage } from '../formats/open-image.js';
import { displaySource, isRemoteSource, openRemote, type RemoteOptions } from '../remote/index.js';
import { checkChain } from '../stack/chain.js';

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
  chunkSize?: number;
  allocatedBytes?: number;
  stableUUID?: string;
  /** For a remote base: its ETag or Last-Modified, and whether it could be pinned. */
  remote?: LayerDetails;
}

export async function describeOpenLayer(layer: Layer): Promise<LayerReport> {
  const base: LayerReport = {
    path: layer.path,
    format: layer.format,
    virtualSize: layer.size,
    blockSize: layer.blockSize,
    blockCount: layer.size / layer.blockSize,
    fileSize: layer instanceof AsifImage ? await layer.fileSize() : layer.size,
    layerType: layer.layerType,
    layerUUID: layer.layerUUID,
    parentUUID: layer.parentUUID,
  };
  if (layer instanceof AsifImage) {
    base.chunkSize = layer.chunkSize;
    base.allocatedBytes = layer.allocatedBytes();
    base.stableUUID = layer.stableUUID;
  }
  if ((layer.format === 'http' || layer.format === 's3') && layer.details) base.remote = await layer.details();
  return base;
}

/** Opens every file (or a remote base) read-only; runs `use` with them; closes them whatever happens. */
export async function withLayers<T>(paths: readonly string[], use: (layers: Layer[]) => Promise<T>, remote?: RemoteOptions): Promise<T> {
  const layers: Layer[] = [];
  try {
    for (const [i, path] of paths.entries()) {
      if (i > 0 && isRemoteSource(path)) throw new IncompatibleStackingError(displaySource(path), 'a remote base can only be the base of a stack');
      layers.push(isRemoteSource(path) ? await openRemote(path, remote) : await openImage(path, { readOnly: true }));
    }
    return await use(layers);
  } finally {
    await Promise.allSettled(layers.map((l) => l.close()));
  }
}

/** Null when the files form a valid stack, otherwise why not. */
export function chainProblem(layers: readonly Layer[]): string | null {
  try {
    checkChain(layers, false);
    return null;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}
