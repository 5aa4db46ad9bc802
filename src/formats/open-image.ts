/**
 * Opening and creating an image of any format: the one place that turns a path (and an
 * optional explicit format) into a Layer, so the CLI and the stack never branch on formats.
 * Without an explicit format the content is probed, and a name that promises another format
 * than the content shows is refused: a format is never guessed into something writable.
 */
import { IncompatibleStackingError, InvalidBlockCountError, RequestError, UnsupportedFormatError } from '../block/errors.js';
import { createAsif, type CreateAsifOptions } from './asif/index.js';
import type { ImageFormat, Layer, WritableFormat } from './layer.js';
import { checkNameAgainstContent, formatEntry, probeEntry } from './probe.js';
import { createRaw } from './raw.js';

export interface OpenImageOptions {
  readOnly?: boolean;
  /** Open as this format, without probing (the user named it: `-f`). */
  format?: ImageFormat;
  /** Read-only: refuse a file another program has open for writing. */
  requireLock?: boolean;
  /** A cache layer's bound on its data in bytes, instead of the one it records. */
  cacheLimit?: number;
  /** Refuse an image that names a backing file (qcow2) instead of opening its chain. */
  noBacking?: boolean;
}

export async function openImage(path: string, options: OpenImageOptions = {}): Promise<Layer> {
  const readOnly = options.readOnly ?? false;
  if (options.format) {
    const entry = formatEntry(options.format);
    if (!entry?.open) throw new UnsupportedFormatError(path, `format ${options.format} cannot be opened`);
    return entry.open(path, { ...options, readOnly, probed: false });
  }
  const entry = await probeEntry(path);
  if (!entry.open) throw new UnsupportedFormatError(path, `this is a ${entry.label} image, which stackbd does not read`);
  checkNameAgainstContent(path, entry);
  return entry.open(path, { ...options, readOnly, probed: true });
}

export function isWritableFormat(format: string): format is WritableFormat {
  return format === 'raw' || format === 'asif';
}

/** What every format's create takes, plus the format (RAW takes no layer fields). */
export interface CreateImageOptions extends CreateAsifOptions {
  format: WritableFormat;
}

export async function createImage(path: string, options: CreateImageOptions): Promise<void> {
  if (options.format === 'asif') {
    await createAsif(path, {
      blockCount: options.blockCount,
      blockSize: options.blockSize ?? 512,
      overwrite: options.overwrite ?? false,
      layerType: options.layerType ?? null,
      parentUUID: options.parentUUID ?? null,
      parentPin: options.parentPin ?? null,
      cacheLimit: options.cacheLimit ?? null,
    });
    return;
  }
  // RAW: a plain sparse file of blockCount × blockSize bytes; it cannot be a layer.
  if (options.layerType || options.parentUUID || options.parentPin || options.cacheLimit) {
    throw new IncompatibleStackingError(path, 'a RAW image cannot be a layer (it has no layer type or UUIDs)');
  }
  const blockSize = options.blockSize ?? 512;
  if (blockSize !== 512 && blockSize !== 4096) {
    throw new RequestError('EINVAL', `block size ${String(blockSize)} is not supported (512 or 4096)`);
  }
  const { blockCount } = options;
  if (!Number.isSafeInteger(blockCount) || blockCount <= 0 || !Number.isSafeInteger(blockCount * blockSize)) {
    throw new InvalidBlockCountError(path, `${blockCount} blocks of ${blockSize} bytes is not a size: give at least one block (${blockSize} bytes)`);
  }
  await createRaw(path, blockCount * blockSize, { overwrite: options.overwrite ?? false });
}
