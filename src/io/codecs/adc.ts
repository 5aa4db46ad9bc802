/**
 * ADC chunks (Apple Data Compression, DMG type 0x80000004, UDCO): a byte-oriented LZ77 coder.
 * Opcodes, from the format notes (spec/udif.md §4):
 * - `b ≥ 0x80`: a literal run of `b − 0x7F` bytes follows;
 * - `0x40 ≤ b < 0x80`: a match of `b − 0x3C` bytes, distance in the next two bytes (big-endian);
 * - `b < 0x40`: a match of `(b >> 2) + 3` bytes, distance `((b & 3) << 8) | next byte`.
 * A match copies byte by byte from `out − distance − 1`, so it may overlap what it writes.
 *
 * Written here rather than taken from the apple-data-compression package: that package keeps
 * its window in module state, copies from before the start of the output without complaint
 * (handing out stale bytes of the previous chunk) and has no output bound. This decoder stops
 * once the declared size is reached (as the format's readers do) and refuses truncated
 * opcodes, matches before the start and output past the declared size.
 */
import { CodecError, type ChunkDecoder } from './codec.js';

function fail(detail: string): never {
  throw new CodecError('adc', detail);
}

export function decodeAdc(input: Uint8Array, output: Uint8Array): number {
  let i = 0;
  let o = 0;
  while (o < output.length && i < input.length) {
    const op = input[i++];
    if (op >= 0x80) {
      const n = op - 0x7f;
      if (i + n > input.length) fail(`a literal run at input byte ${i - 1} is truncated`);
      if (o + n > output.length) fail(`the stream decodes to more than ${output.length} bytes`);
      output.set(input.subarray(i, i + n), o);
      i += n;
      o += n;
      continue;
    }
    let length: number;
    let distance: number;
    if (op >= 0x40) {
      if (i + 2 > input.length) fail(`a match at input byte ${i - 1} is truncated`);
      length = op - 0x3c;
      distance = (input[i] << 8) | input[i + 1];
      i += 2;
    } else {
      if (i + 1 > input.length) fail(`a match at input byte ${i - 1} is truncated`);
      length = (op >> 2) + 3;
      distance = ((op & 3) << 8) | input[i];
      i += 1;
    }
    const from = o - distance - 1;
    if (from < 0) fail(`a match at input byte ${i} reaches before the start of the output`);
    if (o + length > output.length) fail(`the stream decodes to more than ${output.length} bytes`);
    // Byte by byte: an overlapping match repeats what it has just written.
    for (let k = 0; k < length; k++) output[o + k] = output[from + k];
    o += length;
  }
  return o;
}

export const adcDecoder: ChunkDecoder = {
  name: 'adc',
  decode: (input, output) => Promise.resolve().then(() => decodeAdc(input, output)),
};
