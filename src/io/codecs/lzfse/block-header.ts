/**
 * The headers of LZFSE blocks, v1 (`bvx1`, 772 bytes, plain fields) and v2 (`bvx2`, 32 fixed
 * bytes of packed fields and the compressed frequency tables), both turned into one
 * LzfseBlockHeader (format sheet §5.1, §5.3) and checked against the limits of §5.4 before any
 * table is built or payload read. Frequencies land in the caller's 360-entry array in the
 * order L[20], M[20], D[64], literal[256].
 */
import { Alphabet, BlockLimit } from './constants.js';
import { requireInput } from './cursor.js';
import { decodeV2Frequencies } from './frequency-codes.js';
import { lzfseFail } from './lzfse-error.js';
import { readI32, readU16, readU32 } from './read-le.js';

export interface LzfseBlockHeader {
  nRawBytes: number;
  headerSize: number;
  nLiterals: number;
  nMatches: number;
  nLiteralPayloadBytes: number;
  nLmdPayloadBytes: number;
  literalBits: number;
  lmdBits: number;
  literalStates: readonly [number, number, number, number];
  lState: number;
  mState: number;
  dState: number;
}

/** Offsets of each alphabet's frequencies in the 360-entry array. */
export const FrequencyOffset = {
  L: 0,
  M: Alphabet.L_SYMBOLS,
  D: Alphabet.L_SYMBOLS + Alphabet.M_SYMBOLS,
  LITERAL: Alphabet.L_SYMBOLS + Alphabet.M_SYMBOLS + Alphabet.D_SYMBOLS,
} as const;

export function parseV1Header(input: Uint8Array, start: number, freq: Uint16Array): LzfseBlockHeader {
  requireInput(input, start, BlockLimit.V1_HEADER_SIZE, 'LZFSE v1 header');
  const header: LzfseBlockHeader = {
    nRawBytes: readU32(input, start + 4),
    headerSize: BlockLimit.V1_HEADER_SIZE,
    nLiterals: readU32(input, start + 12),
    nMatches: readU32(input, start + 16),
    nLiteralPayloadBytes: readU32(input, start + 20),
    nLmdPayloadBytes: readU32(input, start + 24),
    literalBits: readI32(input, start + 28),
    literalStates: [readU16(input, start + 32), readU16(input, start + 34), readU16(input, start + 36), readU16(input, start + 38)],
    lmdBits: readI32(input, start + 40),
    lState: readU16(input, start + 44),
    mState: readU16(input, start + 46),
    dState: readU16(input, start + 48),
  };
  for (let i = 0; i < Alphabet.FREQUENCY_COUNT; i++) freq[i] = readU16(input, start + 50 + 2 * i);
  checkHeader(header, input, start);
  return header;
}

export function parseV2Header(input: Uint8Array, start: number, freq: Uint16Array): LzfseBlockHeader {
  requireInput(input, start, BlockLimit.V2_FIXED_SIZE, 'LZFSE v2 header');
  // Three packed u64 words, read as 32-bit halves (bit 0 = least significant bit).
  const lo0 = readU32(input, start + 8);
  const hi0 = readU32(input, start + 12);
  const lo1 = readU32(input, start + 16);
  const hi1 = readU32(input, start + 20);
  const lo2 = readU32(input, start + 24);
  const hi2 = readU32(input, start + 28);
  const header: LzfseBlockHeader = {
    nRawBytes: readU32(input, start + 4),
    headerSize: lo2,
    nLiterals: lo0 & 0xfffff,
    nLiteralPayloadBytes: (lo0 >>> 20) | ((hi0 & 0xff) << 12),
    nMatches: (hi0 >>> 8) & 0xfffff,
    literalBits: ((hi0 >>> 28) & 7) - 7,
    literalStates: [lo1 & 0x3ff, (lo1 >>> 10) & 0x3ff, (lo1 >>> 20) & 0x3ff, (lo1 >>> 30) | ((hi1 & 0xff) << 2)],
    nLmdPayloadBytes: (hi1 >>> 8) & 0xfffff,
    lmdBits: ((hi1 >>> 28) & 7) - 7,
    lState: hi2 & 0x3ff,
    mState: (hi2 >>> 10) & 0x3ff,
    dState: (hi2 >>> 20) & 0x3ff,
  };
  if (header.headerSize < BlockLimit.V2_FIXED_SIZE) lzfseFail(`LZFSE v2 header at byte ${start}: header size ${header.headerSize} < 32`);
  requireInput(input, start, header.headerSize, 'LZFSE v2 header');
  decodeV2Frequencies(input, start + BlockLimit.V2_FIXED_SIZE, start + header.headerSize, freq);
  checkHeader(header, input, start);
  return header;
}

function checkHeader(h: LzfseBlockHeader, input: Uint8Array, start: number): void {
  const at = `LZFSE block at byte ${start}`;
  if (h.nLiterals > BlockLimit.LITERALS) lzfseFail(`${at}: ${h.nLiterals} literals, more than ${BlockLimit.LITERALS}`);
  // The encoder pads literals to a multiple of 4 (four interleaved states); accept nothing else.
  if (h.nLiterals % 4 !== 0) lzfseFail(`${at}: ${h.nLiterals} literals is not a multiple of 4`);
  if (h.nMatches > BlockLimit.MATCHES) lzfseFail(`${at}: ${h.nMatches} matches, more than ${BlockLimit.MATCHES}`);
  for (const s of h.literalStates) {
    if (s >= Alphabet.LITERAL_STATES) lzfseFail(`${at}: literal state ${s} out of range`);
  }
  if (h.lState >= Alphabet.L_STATES) lzfseFail(`${at}: L state ${h.lState} out of range`);
  if (h.mState >= Alphabet.M_STATES) lzfseFail(`${at}: M state ${h.mState} out of range`);
  if (h.dState >= Alphabet.D_STATES) lzfseFail(`${at}: D state ${h.dState} out of range`);
  if (h.literalBits < -7 || h.literalBits > 0) lzfseFail(`${at}: literal bits ${h.literalBits} outside -7..0`);
  if (h.lmdBits < -7 || h.lmdBits > 0) lzfseFail(`${at}: L/M/D bits ${h.lmdBits} outside -7..0`);
  requireInput(input, start, h.headerSize + h.nLiteralPayloadBytes + h.nLmdPayloadBytes, `${at}: header and payloads`);
}
