/**
 * Opening and creating an image of any format: the one place that turns a path (and an
 * optional explicit format) into a Layer, so the CLI and the stack never branch on formats.
 */
import { IncompatibleStackingError, InvalidBlockCountError, RequestError } from '../block/errors.js';
import { createAsif, openAsif, type CreateAsifOptions } from './asif/index.js';
import type { ImageFormat, Layer } from './layer.js';
import { probeFormat } from './probe.js';
import { createRaw, openRaw } from './raw.js';

export interface OpenImageOptions {
  readOnly?: boolean;
  /** Skip probing and open as this format. */
  format?: ImageFormat;
}

export async function openImage(path: string, options: OpenImageOptions = {}): Promise<Layer> {
  const format = options.format ?? (await probeFormat(path));
  const readOnly = options.readOnly ?? false;
  return format === 'asif' ? openAsif(path, { readOnly }) : openRaw(path, { readOnly });
}

/** What every format's create takes, plus the format (RAW takes no layer fields). */
export interface CreateImageOptions extends CreateAsifOptions {
  format: ImageFormat;
}

export async function createImage(path: string, options: CreateImageOptions): Promise<void> {
  if (options.format === 'asif') {
    await createAsif(path, {
      blockCount: options.blockCount,
      blockSize: options.blockSize ?? 512,
      overwrite: options.overwrite ?? false,
      layerType: options.layerType ?? null,
      parentUUID: options.parentUUID ?? null,
    });
    return;
  }
  // RAW: a plain sparse file of blockCount × blockSize bytes; it cannot be a layer.
  if (options.layerType || options.parentUUID) {
    throw new IncompatibleStackingError(path, 'a RAW image cannot be a layer (it has no layer type or UUIDs)');
  }
  const blockSize = options.blockSize ?? 512;
  if (blockSize !== 512 && blockSize !== 4096) {
    throw new RequestError('EINVAL', `block size ${String(blockSize)} is not supported (512 or 4096)`);
  }
  const { blockCount } = options;
  if (!Number.isSafeInteger(blockCount) || blockCount <= 0 || !Number.isSafeInteger(blockCount * blockSize)) {
    throw new InvalidBlockCountError(path, `block count ${blockCount} is not a whole number of blocks above 0`);
  }
  await createRaw(path, blockCount * blockSize, { overwrite: options.overwrite ?? false });
}
