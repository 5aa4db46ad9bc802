/**
 * Zstandard (qcow2 compression_type 1). Node 20 has no zstd, so the fzstd package decodes.
 *
 * Only the first frame of the input is decoded (zstd-frame.ts finds where it ends; the bytes
 * after it belong to something else), straight into the caller's buffer, so nothing is
 * allocated for the output. The frame must declare its content size (QEMU always writes it: it
 * compresses a cluster in one call) and that size must fit the output: fzstd would otherwise
 * size a window from the frame's header, which a hostile image controls.
 */
import { decompress } from 'fzstd';
import { CodecError, type ChunkDecoder } from './codec.js';
import { zstdFrameExtent } from './zstd-frame.js';

export const zstdDecoder: ChunkDecoder = {
  name: 'zstd',
  decode(input: Uint8Array, output: Uint8Array): Promise<number> {
    try {
      const frame = zstdFrameExtent(input);
      if (frame.dictionaryId !== 0) throw new CodecError('zstd', `the frame needs dictionary ${frame.dictionaryId}`);
      if (frame.contentSize === null) throw new CodecError('zstd', 'the frame does not declare its content size');
      if (frame.contentSize > output.length) {
        throw new CodecError('zstd', `the frame declares ${frame.contentSize} bytes, more than the ${output.length} expected`);
      }
      const out = output.subarray(0, frame.contentSize);
      // A frame whose blocks fall short of the declared size leaves zeros, never stale bytes.
      out.fill(0);
      decompress(input.subarray(0, frame.length), out);
      return Promise.resolve(frame.contentSize);
    } catch (err) {
      return Promise.reject(err instanceof CodecError ? err : new CodecError('zstd', (err as Error).message));
    }
  },
};
