/**
 * Flattens a stack into one new standalone image (RAW, ASIF or a UDZO/UDRO DMG), keeping holes:
 * ranges the stack reports as zero or absent are not written, and neither are data blocks that
 * hold only zeros (a RAW base reports everything as data). The output reads exactly like the stack.
 */
import { DmgWriter, type DmgCompression } from '../formats/dmg/index.js';
import { createImage, openImage } from '../formats/open-image.js';
import type { WritableFormat } from '../formats/layer.js';
import { ImageError, InvalidBlockCountError } from '../block/errors.js';
import { findSameFile } from '../io/same-file.js';
import type { Stack } from './stack.js';

export interface ConvertOptions {
  format: WritableFormat | 'dmg';
  /** DMG only: zlib chunks (UDZO, the default) or raw ones (UDRO). */
  dmgCompression?: DmgCompression;
  blockSize?: 512 | 4096;
  overwrite?: boolean;
  /** Called with bytes done and the total, after each piece. */
  onProgress?: (done: number, total: number) => void;
}

/** Bytes examined per step; data is read and written in pieces of at most this size. */
const PIECE = 4 * 1024 * 1024;
/** Granularity at which all-zero data is recognised and skipped. */
const ZERO_SCAN = 64 * 1024;

export function isAllZero(buf: Buffer): boolean {
  // Compare 8 bytes at a time where alignment allows; zero pages are the common case.
  const words = Math.floor(buf.length / 8);
  const view = new BigUint64Array(buf.buffer, buf.byteOffset, buf.byteOffset % 8 === 0 ? words : 0);
  for (let i = 0; i < view.length; i++) if (view[i] !== 0n) return false;
  for (let i = view.length * 8; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

export interface ConvertResult {
  /** Virtual size of the output. */
  size: number;
  /** Bytes of data written (the rest of the output is holes). */
  dataBytes: number;
}

export async function convertStack(stack: Stack, outPath: string, options: ConvertOptions): Promise<ConvertResult> {
  const size = stack.size;
  const input = await findSameFile(outPath, stack.layers.map((l) => l.path));
  if (input !== undefined) throw new ImageError(outPath, `is also an input of the conversion (${input}): write the output to another file`);
  let dataBytes = 0;
  const counted = (write: (data: Buffer, at: number) => Promise<void>) => (data: Buffer, at: number): Promise<void> => {
    dataBytes += data.length;
    return write(data, at);
  };
  if (options.format === 'dmg') {
    const dmg = await DmgWriter.create(outPath, { size, compression: options.dmgCompression, overwrite: options.overwrite ?? false });
    try {
      await copyData(stack, counted((data, at) => dmg.write(data, at)), options.onProgress);
    } catch (err) {
      await dmg.abort();
      throw err;
    }
    await dmg.finish();
    return { size, dataBytes };
  }
  const blockSize = options.blockSize ?? (options.format === 'asif' ? (stack.blockSize === 4096 ? 4096 : 512) : 512);
  if (size % blockSize !== 0) {
    throw new InvalidBlockCountError(outPath, `the stack is ${size} bytes, not a whole number of ${blockSize}-byte blocks`);
  }
  await createImage(outPath, { format: options.format, blockCount: size / blockSize, blockSize, overwrite: options.overwrite ?? false });
  const out = await openImage(outPath, { readOnly: false, format: options.format });
  try {
    await copyData(stack, counted((data, at) => out.write(data, at)), options.onProgress);
    await out.flush();
  } finally {
    await out.close();
  }
  return { size, dataBytes };
}

/** Hands every non-zero data range of the stack to `write`, in disk order. */
async function copyData(stack: Stack, write: (data: Buffer, at: number) => Promise<void>, onProgress?: (done: number, total: number) => void): Promise<void> {
  const size = stack.size;
  const buf = Buffer.allocUnsafe(PIECE);
  for (let offset = 0; offset < size; offset += PIECE) {
    const length = Math.min(PIECE, size - offset);
    for (const run of await stack.extents(offset, length)) {
      if (run.state !== 'data') continue;
      const piece = buf.subarray(0, run.length);
      await stack.read(piece, run.offset);
      await writeNonZero(piece, run.offset, write);
    }
    onProgress?.(offset + length, size);
  }
}

/** Writes the parts of `data` that are not all zeros (scanned in ZERO_SCAN steps), merged. */
export async function writeNonZero(data: Buffer, offset: number, write: (piece: Buffer, at: number) => Promise<void>): Promise<void> {
  let start = -1;
  for (let pos = 0; pos < data.length; pos += ZERO_SCAN) {
    const end = Math.min(pos + ZERO_SCAN, data.length);
    const zero = isAllZero(data.subarray(pos, end));
    if (!zero && start < 0) start = pos;
    if (zero && start >= 0) {
      await write(data.subarray(start, pos), offset + start);
      start = -1;
    }
  }
  if (start >= 0) await write(data.subarray(start), offset + start);
}
