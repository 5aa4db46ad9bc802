/**
 * Fixed facts of the LZFSE stream format (block magics, alphabet sizes, per-block limits and
 * the symbol-to-value tables of the L, M and D alphabets), as given by the format sheet
 * (shared/spec/lzfse.md §1, §2, §9). Everything here is read-only data.
 */

/** Block magics as little-endian u32 ("bvx$", "bvx-", "bvx1", "bvx2", "bvxn"). */
export const BlockMagic = {
  END: 0x24787662,
  RAW: 0x2d787662,
  LZFSE_V1: 0x31787662,
  LZFSE_V2: 0x32787662,
  LZVN: 0x6e787662,
} as const;

export const Alphabet = {
  L_SYMBOLS: 20,
  M_SYMBOLS: 20,
  D_SYMBOLS: 64,
  LITERAL_SYMBOLS: 256,
  L_STATES: 64,
  M_STATES: 64,
  D_STATES: 256,
  LITERAL_STATES: 1024,
  /** L + M + D + literal frequencies stored per block. */
  FREQUENCY_COUNT: 20 + 20 + 64 + 256,
} as const;

export const BlockLimit = {
  MATCHES: 10_000,
  LITERALS: 40_000,
  /** Bytes of a v1 header (770 bytes of fields and 2 bytes of C struct padding). */
  V1_HEADER_SIZE: 772,
  /** Fixed part of a v2 header; the encoded frequency tables follow. */
  V2_FIXED_SIZE: 32,
  RAW_HEADER_SIZE: 8,
  LZVN_HEADER_SIZE: 12,
} as const;

/** Extra bits and base value of each L symbol. */
export const L_EXTRA_BITS: readonly number[] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 5, 8];
export const L_BASE: readonly number[] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 20, 28, 60];

/** Extra bits and base value of each M symbol. */
export const M_EXTRA_BITS: readonly number[] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 5, 8, 11];
export const M_BASE: readonly number[] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 24, 56, 312];

/** Extra bits of each D symbol: floor(symbol / 4). */
export const D_EXTRA_BITS: readonly number[] = [
  0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7,
  8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11, 12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14,
  14, 15, 15, 15, 15,
];
/** Base value of each D symbol; D value 0 (symbol 0) means "the previous distance". */
export const D_BASE: readonly number[] = [
  0, 1, 2, 3, 4, 6, 8, 10,
  12, 16, 20, 24, 28, 36, 44, 52,
  60, 76, 92, 108, 124, 156, 188, 220,
  252, 316, 380, 444, 508, 636, 764, 892,
  1020, 1276, 1532, 1788, 2044, 2556, 3068, 3580,
  4092, 5116, 6140, 7164, 8188, 10236, 12284, 14332,
  16380, 20476, 24572, 28668, 32764, 40956, 49148, 57340,
  65532, 81916, 98300, 114684, 131068, 163836, 196604, 229372,
];
