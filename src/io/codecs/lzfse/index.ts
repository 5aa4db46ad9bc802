/**
 * The LZFSE / LZVN decoder (Apple's ULFO DMG chunks, type 0x80000007), written from the format
 * facts in shared/spec/lzfse.md. `decodeLzfse` is synchronous; `lzfseDecoder` is the same thing
 * behind the ChunkDecoder interface.
 */
import type { ChunkDecoder } from '../codec.js';
import { LZFSE_CODEC_NAME } from './lzfse-error.js';
import { decodeLzfse } from './stream.js';

export { decodeLzfse } from './stream.js';

export const lzfseDecoder: ChunkDecoder = {
  name: LZFSE_CODEC_NAME,
  async decode(input: Uint8Array, output: Uint8Array): Promise<number> {
    return decodeLzfse(input, output);
  },
};
