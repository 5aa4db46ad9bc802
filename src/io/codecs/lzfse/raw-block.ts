/** A raw block (`bvx-`): magic, u32 n_raw_bytes, then that many bytes copied to the output. */
import { BlockLimit } from './constants.js';
import { blockOutputEnd, requireInput, type StreamCursor } from './cursor.js';
import { readU32 } from './read-le.js';

export function decodeRawBlock(input: Uint8Array, output: Uint8Array, cursor: StreamCursor): void {
  const start = cursor.inPos;
  requireInput(input, start, BlockLimit.RAW_HEADER_SIZE, 'raw block header');
  const n = readU32(input, start + 4);
  requireInput(input, start, BlockLimit.RAW_HEADER_SIZE + n, 'raw block');
  blockOutputEnd(output, cursor, n);
  const from = start + BlockLimit.RAW_HEADER_SIZE;
  output.set(input.subarray(from, from + n), cursor.outPos);
  cursor.outPos += n;
  cursor.inPos = from + n;
}
