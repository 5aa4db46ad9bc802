/**
 * The compressed frequency tables of a v2 LZFSE block header (format sheet §5.2).
 *
 * The 360 frequencies (L, M, D, literal) follow the 32 fixed header bytes as prefix codes
 * packed least significant bit first. The codes must fill the table bytes exactly: every byte
 * is reached and fewer than 8 bits are left over. A code that needs bits past the end is an
 * error; bits past the end never count as zeros for a code that is actually used.
 */
import { lzfseFail } from './lzfse-error.js';

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
    let length: number;
    let value: number;
    if ((acc & 3) === 0) {
      length = 2;
      value = 0;
    } else if ((acc & 3) === 2) {
      length = 2;
      value = 1;
    } else if ((acc & 7) === 1) {
      length = 3;
      value = 2;
    } else if ((acc & 7) === 5) {
      length = 3;
      value = 3;
    } else if ((acc & 7) === 3) {
      length = 5;
      value = 4 + ((acc >>> 3) & 3);
    } else if ((acc & 15) === 7) {
      length = 8;
      value = 8 + ((acc >>> 4) & 15);
    } else {
      length = 14;
      value = 24 + ((acc >>> 4) & 1023);
    }
    if (length > count) lzfseFail(`frequency table ends inside value ${i}`);
    freq[i] = value;
    acc >>>= length;
    count -= length;
  }
  if (pos !== end || count >= 8) {
    lzfseFail(`frequency table is ${end - start} bytes but its codes end ${(end - pos) * 8 + count} bits earlier`);
  }
}
