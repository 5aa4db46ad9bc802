/** Little-endian reads from a byte array; callers check the bytes are there first. */

export function readU16(data: Uint8Array, pos: number): number {
  return data[pos] | (data[pos + 1] << 8);
}

export function readU32(data: Uint8Array, pos: number): number {
  return (data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16) | (data[pos + 3] << 24)) >>> 0;
}

/** A signed 32-bit value (v1 headers store literal_bits and lmd_bits this way). */
export function readI32(data: Uint8Array, pos: number): number {
  return data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16) | (data[pos + 3] << 24);
}
