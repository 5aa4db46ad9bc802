/**
 * The backward bit reader of LZFSE's literal and L/M/D payloads (format sheet §7).
 *
 * The encoder writes fields forward, least significant bit first, in the reverse of decoding
 * order, so the decoder starts at the end of the payload and walks towards its start. A payload
 * of n bytes carries 8n + bits valid bits (bits in −7..0): the top −bits bits of its last byte
 * are padding and must be zero.
 *
 * State: `acc` holds the `count` loaded but unread bits (acc < 2^count, count ≤ 30: reads are at
 * most 23 bits and we load a byte only while count < the bits asked for); bytes [start, pos) are
 * not loaded yet. A read that needs bits before `start` is an error, so nothing outside the
 * payload is ever touched.
 */
import { lzfseFail } from './lzfse-error.js';

/** Widest single read the decoder makes (D: 8 state bits + 15 extra bits). */
export const MAX_READ_BITS = 23;

export class BackwardBitReader {
  private data: Uint8Array = new Uint8Array(0);
  private start = 0;
  private pos = 0;
  private acc = 0;
  private count = 0;
  private what = '';

  /** Positions the reader at the end of the payload data[start, end). */
  init(data: Uint8Array, start: number, end: number, bits: number, what: string): void {
    if (bits < -7 || bits > 0) lzfseFail(`${what} payload: bit count ${bits} outside -7..0`);
    this.data = data;
    this.start = start;
    this.what = what;
    if (end === start) {
      if (bits !== 0) lzfseFail(`${what} payload is empty but declares ${bits} bits`);
      this.pos = start;
      this.acc = 0;
      this.count = 0;
      return;
    }
    const last = data[end - 1];
    const keep = 8 + bits;
    if (last >>> keep !== 0) lzfseFail(`${what} payload: nonzero padding bits`);
    this.pos = end - 1;
    this.acc = last;
    this.count = keep;
  }

  /** The next `k` bits (0 ≤ k ≤ MAX_READ_BITS) counted from the end, as an integer. */
  read(k: number): number {
    while (this.count < k) {
      if (this.pos <= this.start) lzfseFail(`${this.what} bit stream underflow`);
      this.acc = (this.acc << 8) | this.data[--this.pos];
      this.count += 8;
    }
    this.count -= k;
    const value = this.acc >>> this.count;
    this.acc &= (1 << this.count) - 1;
    return value;
  }

  /** Valid bits not read yet. */
  remaining(): number {
    return this.count + 8 * (this.pos - this.start);
  }
}
