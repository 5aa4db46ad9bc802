/** Test-only: edits of valid LZFSE streams, to make the bad ones the decoder must refuse. */
import { concat } from './stream-encoder.js';

/** A copy of `stream` with the `width`-bit field at bit `bit` of the u64 at `offset` set to `value`. */
export function withPackedField(stream: Uint8Array, offset: number, bit: number, width: number, value: number): Uint8Array {
  const copy = stream.slice();
  const view = new DataView(copy.buffer);
  const mask = ((1n << BigInt(width)) - 1n) << BigInt(bit);
  const word = view.getBigUint64(offset, true);
  view.setBigUint64(offset, (word & ~mask) | ((BigInt(value) << BigInt(bit)) & mask), true);
  return copy;
}

/** A copy of `stream` with the u32 (or u16, or i32) at `offset` set to `value`. */
export function withField(stream: Uint8Array, offset: number, value: number, size: 'u16' | 'u32' | 'i32' = 'u32'): Uint8Array {
  const copy = stream.slice();
  const view = new DataView(copy.buffer);
  if (size === 'u16') view.setUint16(offset, value, true);
  else if (size === 'i32') view.setInt32(offset, value, true);
  else view.setUint32(offset, value, true);
  return copy;
}

export function concatBytes(...parts: (Uint8Array | number[])[]): Uint8Array {
  return concat(parts.map((p) => (p instanceof Uint8Array ? p : Uint8Array.from(p))));
}

export const END_BLOCK = [0x62, 0x76, 0x78, 0x24];
