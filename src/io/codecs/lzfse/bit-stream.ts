/**
 * The backward bit reader of LZFSE's literal and L/M/D payloads (format sheet §7).
 *
 * The encoder writes fields forward, least significant bit first, in the reverse of decoding
 * order, so the decoder starts at the end of the payload and walks towards its start. A payload
 * of n bytes carries 8n + bits valid bits (bits in −7..0): the top −bits bits of its last byte
 * are padding and must be zero.
 *
 * State: the low `count` bits of `acc` are loaded but unread (bits above them are stale and
 * masked off); bytes [start, pos) are not loaded yet. `refill` loads whole bytes until at least
 * 24 bits are buffered (count ≤ 31, so acc fits an int32), which lets the hot loops take
 * several small fields per refill. Taking more bits than the payload has left is an error, so
 * nothing outside the payload is ever touched.
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

  /** Buffers at least 24 bits, or every bit left when fewer remain. */
  refill(): void {
    while (this.count <= 23 && this.pos > this.start) {
      this.acc = (this.acc << 8) | this.data[--this.pos];
      this.count += 8;
    }
  }

  /** The next `k` bits of those buffered (k ≤ 24; after a refill, fields summing to 24 fit). */
  take(k: number): number {
    if (k > this.count) lzfseFail(`${this.what} bit stream underflow`);
    this.count -= k;
    return (this.acc >>> this.count) & ((1 << k) - 1);
  }

  /** The next `k` bits (0 ≤ k ≤ MAX_READ_BITS) counted from the end, as an integer. */
  read(k: number): number {
    if (k > this.count) this.refill();
    return this.take(k);
  }

  /** Valid bits not read yet. */
  remaining(): number {
    return this.count + 8 * (this.pos - this.start);
  }
}
