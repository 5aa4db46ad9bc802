/**
 * Flattens a stack into one new standalone image (RAW, ASIF or a UDZO/UDRO DMG), keeping holes:
 * ranges the stack reports as zero or absent are not written, and neither are data blocks that
 * hold only zeros (a RAW base reports everything as data). The output reads exactly like the stack.
 * The copy is pipelined (bulk-copy.ts): several pieces are read and written at once, the DMG
 * writer gets them in disk order. When the copy fails, the output made for it is removed.
 */
import fs from 'node:fs/promises';
import { DmgWriter, type DmgCompression } from '../formats/dmg/index.js';
import { createImage, openImage } from '../formats/open-image.js';
import type { Layer, WritableFormat } from '../formats/layer.js';
import { ImageError, InvalidBlockCountError } from '../block/errors.js';
import { findSameFile } from '../io/same-file.js';
import { bulkCopy, type BulkCopyOptions, type BulkSink } from './bulk-copy.js';
import type { Stack } from './stack.js';

export interface ConvertOptions extends BulkCopyOptions {
  format: WritableFormat | 'dmg';
  /** DMG only: zlib chunks (UDZO, the default) or raw ones (UDRO). */
  dmgCompression?: DmgCompression;
  blockSize?: 512 | 4096;
  overwrite?: boolean;
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
  const copy = { pieceBytes: options.pieceBytes, inFlight: options.inFlight, onProgress: options.onProgress };
  const source = { size, map: (offset: number, length: number, maxRuns: number) => stack.extents(offset, length, maxRuns), read: (buf: Buffer, offset: number) => stack.read(buf, offset) };
  let dataBytes = 0;
  const sink = (write: (data: Buffer, at: number) => Promise<void>, ordered: boolean): BulkSink => ({
    ordered,
    skipZeroData: true,
    write: (data, at) => {
      dataBytes += data.length;
      return write(data, at);
    },
  });
  if (options.format === 'dmg') {
    const dmg = await DmgWriter.create(outPath, { size, compression: options.dmgCompression, overwrite: options.overwrite ?? false });
    try {
      await bulkCopy(source, sink((data, at) => dmg.write(data, at), true), copy);
    } catch (err) {
      await dmg.abort().catch(() => undefined);
      await fs.rm(outPath, { force: true });
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
  // From here on the file is ours: a failure removes it rather than leave a half-written image.
  let out: Layer | null = null;
  try {
    out = await openImage(outPath, { readOnly: false, format: options.format });
    const layer = out;
    await bulkCopy(source, sink((data, at) => layer.write(data, at), false), copy);
    await layer.flush();
    out = null;
    await layer.close();
  } catch (err) {
    await out?.close().catch(() => undefined);
    await fs.rm(outPath, { force: true });
    throw err;
  }
  return { size, dataBytes };
}
