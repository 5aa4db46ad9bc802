/**
 * Turning one compressed chunk into its sectors: read the stored bytes, run the codec, insist
 * on exactly the declared size. Every failure names the file, the partition, the entry and
 * the disk range, so `stackbd` can say which chunk of which image is damaged.
 */
import { CorruptedImageError, UnsupportedFormatError } from '../../block/errors.js';
import type { BlockFile } from '../../io/block-file.js';
import { CodecError } from '../../io/codecs/codec.js';
import { decoderFor } from '../../io/codecs/index.js';
import type { ChunkInfo } from './chunk-table.js';
import { SECTOR } from './layout.js';

/** How messages name a chunk: `blkx 2 "name" entry 5 (zlib, sectors 2176-2229)`. */
export function chunkName(c: ChunkInfo, partitionName: string): string {
  const first = c.start / SECTOR;
  return `blkx ${c.partition} "${partitionName}" entry ${c.entry} (${c.kind}, sectors ${first}-${c.end / SECTOR - 1})`;
}

export async function decodeChunk(file: BlockFile, c: ChunkInfo, name: string): Promise<Buffer> {
  const decoder = c.kind === 'raw' || c.kind === 'zero' || c.kind === 'ignore' ? null : decoderFor(c.kind);
  if (!decoder) throw new UnsupportedFormatError(file.path, `${name}: stackbd has no ${c.kind} decoder`);
  const input = Buffer.allocUnsafe(c.length);
  await file.read(input, c.position);
  const size = c.end - c.start;
  let output: Buffer;
  let written: number;
  try {
    // A codec that makes its own buffer hands it over (one allocation and no copy per chunk).
    if (decoder.decodeToBuffer) {
      output = await decoder.decodeToBuffer(input, size);
      written = output.length;
    } else {
      output = Buffer.allocUnsafe(size);
      written = await decoder.decode(input, output);
    }
  } catch (err) {
    // Decoders reject with CodecError; anything else a codec library throws means the same.
    const detail = err instanceof CodecError ? err.message : `${decoder.name}: ${err instanceof Error ? err.message : String(err)}`;
    throw new CorruptedImageError(file.path, `${name}: ${detail}`);
  }
  if (written !== size) throw new CorruptedImageError(file.path, `${name}: decodes to ${written} bytes, not ${size}`);
  return output;
}
