/**
 * Where decoding stands in the stream: the next input byte and the next output byte. Block
 * decoders advance both; a block leaves them at its own end or throws.
 */
import { lzfseFail } from './lzfse-error.js';

export interface StreamCursor {
  inPos: number;
  outPos: number;
}

/** Fails unless `nRawBytes` more output bytes fit in `output`; returns the block's output end. */
export function blockOutputEnd(output: Uint8Array, cursor: StreamCursor, nRawBytes: number): number {
  if (nRawBytes > output.length - cursor.outPos) {
    lzfseFail(`block of ${nRawBytes} bytes at output byte ${cursor.outPos} exceeds the ${output.length}-byte output`);
  }
  return cursor.outPos + nRawBytes;
}

/** Fails unless `size` bytes starting at `pos` lie inside `input`. */
export function requireInput(input: Uint8Array, pos: number, size: number, what: string): void {
  if (size > input.length - pos) {
    lzfseFail(`${what} at byte ${pos} needs ${size} bytes, the stream has ${input.length - pos} left`);
  }
}
