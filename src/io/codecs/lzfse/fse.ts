/**
 * Finite State Entropy decoding tables and the decoding of one symbol (format sheet §6).
 *
 * A table has one entry per state (N, a power of two). Symbols own consecutive states in
 * increasing symbol order (no spreading); a symbol of frequency f owns f states. Decoding a
 * symbol at state s outputs the entry's symbol (or value) and moves to delta + read(nbits),
 * which always lies in [0, N). When the frequencies sum to less than N the states past the sum
 * belong to nobody: their entries are INVALID and reaching one is an error.
 *
 * Entries are packed into Int32Array slots so decoding allocates nothing:
 * - literal: symbol | nbits << 8 | delta << 16;
 * - value (L, M, D): slot 2s = (nbits + vbits) | vbits << 8 | delta << 16, slot 2s + 1 = vbase.
 */
import type { BackwardBitReader } from './bit-stream.js';
import { lzfseFail } from './lzfse-error.js';

const INVALID = -1;

/**
 * Calls `emit(state, symbol, nbits, delta)` for every assigned state and returns how many
 * states were assigned (the frequency sum); the caller marks the rest INVALID.
 */
function walkStates(
  freq: ArrayLike<number>,
  nStates: number,
  what: string,
  emit: (state: number, symbol: number, nbits: number, delta: number) => void,
): number {
  let total = 0;
  for (let s = 0; s < freq.length; s++) total += freq[s];
  if (total > nStates) lzfseFail(`${what} frequencies sum to ${total}, more than ${nStates} states`);
  let state = 0;
  for (let symbol = 0; symbol < freq.length; symbol++) {
    const f = freq[symbol];
    if (f === 0) continue;
    // k: the shift with N <= f * 2^k < 2N; the first j0 states read k bits, the others k - 1.
    const k = Math.clz32(f) - Math.clz32(nStates);
    const j0 = ((2 * nStates) >> k) - f;
    for (let j = 0; j < f; j++, state++) {
      if (j < j0) emit(state, symbol, k, ((f + j) << k) - nStates);
      else emit(state, symbol, k - 1, (j - j0) << (k - 1));
    }
  }
  return total;
}

/** Fills `table` (length N = 1024 for literals) from the literal frequencies. */
export function buildLiteralTable(freq: ArrayLike<number>, table: Int32Array): void {
  const used = walkStates(freq, table.length, 'literal', (state, symbol, nbits, delta) => {
    table[state] = symbol | (nbits << 8) | (delta << 16);
  });
  table.fill(INVALID, used);
}

/**
 * Decodes `count` literals (a multiple of 4) into out[0, count): four interleaved states share
 * one bit stream, state q decoding literals q, q + 4, q + 8, ...
 */
export function decodeLiterals(
  table: Int32Array,
  states: Int32Array,
  reader: BackwardBitReader,
  out: Uint8Array,
  count: number,
): void {
  let s0 = states[0];
  let s1 = states[1];
  let s2 = states[2];
  let s3 = states[3];
  for (let i = 0; i < count; i += 4) {
    const e0 = table[s0];
    const e1 = table[s1];
    const e2 = table[s2];
    const e3 = table[s3];
    if ((e0 | e1 | e2 | e3) < 0) lzfseFail('literal state has no symbol');
    // A literal reads at most 10 bits: two per refill of 24.
    reader.refill();
    out[i] = e0 & 0xff;
    s0 = (e0 >>> 16) + reader.take((e0 >>> 8) & 0xff);
    out[i + 1] = e1 & 0xff;
    s1 = (e1 >>> 16) + reader.take((e1 >>> 8) & 0xff);
    reader.refill();
    out[i + 2] = e2 & 0xff;
    s2 = (e2 >>> 16) + reader.take((e2 >>> 8) & 0xff);
    out[i + 3] = e3 & 0xff;
    s3 = (e3 >>> 16) + reader.take((e3 >>> 8) & 0xff);
  }
}

/** The decoder of one of the L, M, D alphabets: its table and its current state. */
export class FseValueDecoder {
  /** Two slots per state, see the design note. */
  readonly table: Int32Array;
  state = 0;

  constructor(
    readonly nStates: number,
    private readonly extraBits: readonly number[],
    private readonly base: readonly number[],
    private readonly what: string,
  ) {
    this.table = new Int32Array(2 * nStates);
  }

  /** Rebuilds the table from this block's frequencies and sets the start state. */
  reset(freq: ArrayLike<number>, state: number): void {
    const { table, extraBits, base } = this;
    const used = walkStates(freq, this.nStates, this.what, (s, symbol, nbits, delta) => {
      const vbits = extraBits[symbol];
      table[2 * s] = (nbits + vbits) | (vbits << 8) | (delta << 16);
      table[2 * s + 1] = base[symbol];
    });
    for (let s = used; s < this.nStates; s++) table[2 * s] = INVALID;
    this.state = state;
  }

  /** One value: base + extra bits; the state bits are the high part of the same read. */
  decode(reader: BackwardBitReader): number {
    const i = 2 * this.state;
    const e = this.table[i];
    if (e < 0) lzfseFail(`${this.what} state has no symbol`);
    const vbits = (e >>> 8) & 0xff;
    const x = reader.read(e & 0xff);
    this.state = (e >>> 16) + (x >>> vbits);
    return this.table[i + 1] + (x & ((1 << vbits) - 1));
  }
}
