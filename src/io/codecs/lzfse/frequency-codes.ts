/**
 * The compressed frequency tables of a v2 LZFSE block header (format sheet §5.2).
 *
 * The 360 frequencies (L, M, D, literal) follow the 32 fixed header bytes as prefix codes
 * packed least significant bit first. The codes must fill the table bytes exactly: every byte
 * is reached and fewer than 8 bits are left over. A code that needs bits past the end is an
 * error; bits past the end never count as zeros for a code that is actually used.
 */
import { lzfseFail } from './lzfse-error.js';

/** Code length by the low 4 bits: ..00/..10 → 2, .001/.101 → 3, .011 → 5, 0111 → 8, 1111 → 14. */
const CODE_LENGTH: readonly number[] = [2, 3, 2, 5, 2, 3, 2, 8, 2, 3, 2, 5, 2, 3, 2, 14];
/** Value of the 2-, 3- and 5-bit codes by the low 5 bits (entries for 8/14-bit codes unused). */
const SHORT_VALUE: readonly number[] = [0, 2, 1, 4, 0, 3, 1, 0, 0, 2, 1, 5, 0, 3, 1, 0, 0, 2, 1, 6, 0, 3, 1, 0, 0, 2, 1, 7, 0, 3, 1, 0];

/** Decodes freq.length values from input[start, end) into freq. */
export function decodeV2Frequencies(input: Uint8Array, start: number, end: number, freq: Uint16Array): void {
  if (start === end) {
    freq.fill(0);
    return;
  }
  let pos = start;
  let acc = 0;
  let count = 0;
  for (let i = 0; i < freq.length; i++) {
    // 14 bits cover the longest code; acc stays below 2^22.
    while (count < 14 && pos < end) {
      acc |= input[pos++] << count;
      count += 8;
    }
    const length = CODE_LENGTH[acc & 15];
    const value = length === 8 ? 8 + ((acc >>> 4) & 15) : length === 14 ? 24 + ((acc >>> 4) & 1023) : SHORT_VALUE[acc & 31];
    if (length > count) lzfseFail(`frequency table ends inside value ${i}`);
    freq[i] = value;
    acc >>>= length;
    count -= length;
  }
  if (pos !== end || count >= 8) {
    lzfseFail(`frequency table is ${end - start} bytes but its codes end ${(end - pos) * 8 + count} bits earlier`);
  }
}
