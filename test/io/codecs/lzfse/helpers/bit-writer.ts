/**
 * Test-only: a forward bit writer, least significant bit first (a field of n bits written at
 * stream bit p puts its bit i at stream bit p + i; stream bit q is bit q & 7 of byte q >> 3).
 * The LZFSE frequency tables use it as is; the FSE payloads write their fields in the reverse
 * of decoding order so the decoder can read them backwards from the end.
 */
export class BitWriter {
  private bytes: number[] = [];
  private acc = 0;
  private count = 0;
  private total = 0;

  /** Writes the low `n` bits of `value` (n ≤ 24). */
  write(value: number, n: number): void {
    if (n === 0) return;
    this.acc |= (value & ((1 << n) - 1)) << this.count;
    this.count += n;
    this.total += n;
    while (this.count >= 8) {
      this.bytes.push(this.acc & 0xff);
      this.acc >>>= 8;
      this.count -= 8;
    }
  }

  /** The bytes (last one zero-padded) and the LZFSE bits field: valid bits − 8 × bytes (−7..0). */
  finish(): { bytes: Uint8Array; bits: number } {
    const bytes = [...this.bytes];
    if (this.count > 0) bytes.push(this.acc & 0xff);
    return { bytes: Uint8Array.from(bytes), bits: this.total - 8 * bytes.length };
  }
}
