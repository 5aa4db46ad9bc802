/**
 * The chunk codecs by name: what a format looks up when a chunk's type names a codec. Every
 * decoder turns bad input into a CodecError (codec.ts); the format adds the file and chunk.
 */
import { adcDecoder } from './adc.js';
import { bzip2Decoder } from './bzip2.js';
import type { ChunkDecoder } from './codec.js';
import { lzfseDecoder } from './lzfse/index.js';
import { xzDecoder } from './xz.js';
import { zlibDecoder } from './zlib.js';

export type CodecName = 'zlib' | 'bzip2' | 'xz' | 'adc' | 'lzfse';

export const DECODERS: Readonly<Record<CodecName, ChunkDecoder>> = {
  zlib: zlibDecoder,
  bzip2: bzip2Decoder,
  xz: xzDecoder,
  adc: adcDecoder,
  lzfse: lzfseDecoder,
};

/** The decoder of a codec, or null when stackbd has none (a name from a newer table). */
export function decoderFor(name: CodecName): ChunkDecoder | null {
  return DECODERS[name] ?? null;
}
