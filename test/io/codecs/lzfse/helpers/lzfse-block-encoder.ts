/**
 * Test-only: an LZFSE block encoder (`bvx2` or `bvx1`) for input[from, ...), written from
 * shared/spec/lzfse.md §5–§10 independently of the decoder (its value tables are derived from
 * the extra-bit counts, not copied). Greedy matches, frequencies normalised to the state count
 * (or, with `shortTables`, to less: the decoder must accept unassigned states it never
 * reaches), FSE encoding in the reverse of decoding order from final states 0.
 */
import { BitWriter } from './bit-writer.js';
import type { MatchFinder } from './match-finder.js';

const MAX_L = 315;
const MAX_M = 2359;
const MAX_D = 262139;
/** Stop a block before the format's limits (10000 triples, 40000 literals) can be reached. */
const TRIPLE_BUDGET = 9000;
const LITERAL_BUDGET = 39000;

function extraBits(prefix: number[], tail: number[]): number[] {
  return [...prefix, ...tail];
}
const L_BITS = extraBits(new Array<number>(16).fill(0), [2, 3, 5, 8]);
const M_BITS = extraBits(new Array<number>(16).fill(0), [3, 5, 8, 11]);
const D_BITS = Array.from({ length: 64 }, (_, s) => s >> 2);

function basesOf(bits: number[]): number[] {
  const base = [0];
  for (let s = 1; s < bits.length; s++) base.push(base[s - 1] + (1 << bits[s - 1]));
  return base;
}
const L_BASE = basesOf(L_BITS);
const M_BASE = basesOf(M_BITS);
const D_BASE = basesOf(D_BITS);

function symbolOf(value: number, base: number[]): number {
  let s = base.length - 1;
  while (base[s] > value) s--;
  return s;
}

interface Alphabet {
  states: number;
  bits: number[];
  base: number[];
}
const L: Alphabet = { states: 64, bits: L_BITS, base: L_BASE };
const M: Alphabet = { states: 64, bits: M_BITS, base: M_BASE };
const D: Alphabet = { states: 256, bits: D_BITS, base: D_BASE };

/** Frequencies summing to `target` (≤ N), every used symbol at least 1; unused alphabet: all on 0. */
function normalise(counts: number[], target: number): number[] {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return counts.map((_, s) => (s === 0 ? target : 0));
  const f = counts.map((c) => (c === 0 ? 0 : Math.max(1, Math.floor((c * target) / total))));
  let sum = f.reduce((a, b) => a + b, 0);
  while (sum !== target) {
    let big = 0;
    for (let s = 1; s < f.length; s++) if (f[s] > f[big]) big = s;
    const change = sum < target ? target - sum : -Math.min(sum - target, f[big] - 1);
    f[big] += change;
    sum += change;
  }
  return f;
}

/** FSE tables for encoding: each symbol's first state and frequency. */
class FseEncoder {
  private readonly start: number[] = [];

  constructor(
    readonly freq: number[],
    private readonly states: number,
  ) {
    let next = 0;
    for (const f of freq) {
      this.start.push(next);
      next += f;
    }
  }

  /**
   * Going backwards: the decoder is in state `after` once it has decoded `symbol`. Returns the
   * state it was in before, and the bits it read to get from there to `after`.
   */
  step(symbol: number, after: number): { before: number; value: number; nbits: number } {
    const f = this.freq[symbol];
    const n = this.states;
    const k = Math.clz32(f) - Math.clz32(n);
    const j0 = (2 * n >> k) - f;
    if (after < f * (1 << k) - n) {
      const j = j0 + (after >> (k - 1));
      return { before: this.start[symbol] + j, value: after - ((j - j0) << (k - 1)), nbits: k - 1 };
    }
    const j = ((after + n) >> k) - f;
    return { before: this.start[symbol] + j, value: after + n - ((f + j) << k), nbits: k };
  }
}

/** One (L, M, D) triple as coded: d = 0 means "the previous distance". */
export interface Triple {
  l: number;
  m: number;
  d: number;
}

/** Encodes one frequency value with the v2 prefix code. */
function writeFrequency(w: BitWriter, v: number): void {
  if (v === 0) w.write(0, 2);
  else if (v === 1) w.write(2, 2);
  else if (v === 2) w.write(1, 3);
  else if (v === 3) w.write(5, 3);
  else if (v < 8) w.write(3 | ((v - 4) << 3), 5);
  else if (v < 24) w.write(7 | ((v - 8) << 4), 8);
  else w.write(15 | ((v - 24) << 4), 14);
}

export interface LzfseBlockOptions {
  version: 1 | 2;
  /** Normalise frequencies to 3/4 of the states, leaving the rest unassigned. */
  shortTables?: boolean;
}

/**
 * Encodes input[from, ...) up to `to` (or earlier, when the block's budget is spent) as one
 * block; returns the block and where it stopped.
 */
export function encodeLzfseBlock(
  data: Uint8Array,
  from: number,
  to: number,
  finder: MatchFinder,
  options: LzfseBlockOptions,
): { block: Uint8Array; end: number } {
  const triples: Triple[] = [];
  const literals: number[] = [];
  let previousDistance = 0;
  const push = (l: number, m: number, distance: number): void => {
    // Literal runs longer than MAX_L go out as (315, 0, 1) triples, as the reference does.
    while (l > MAX_L) {
      triples.push({ l: MAX_L, m: 0, d: previousDistance === 1 ? 0 : 1 });
      previousDistance = 1;
      l -= MAX_L;
    }
    triples.push({ l, m, d: distance === previousDistance ? 0 : distance });
    previousDistance = distance;
  };
  let literalStart = from;
  let i = from;
  while (i < to && triples.length < TRIPLE_BUDGET && literals.length + (i - literalStart) < LITERAL_BUDGET) {
    const found = finder.find(i, to - i, Math.min(i, MAX_D), previousDistance);
    if (found === null) {
      i++;
      continue;
    }
    for (let p = literalStart; p < i; p++) literals.push(data[p]);
    let l = i - literalStart;
    let m = found.length;
    while (m > MAX_M) {
      push(l, MAX_M, found.distance);
      l = 0;
      m -= MAX_M;
    }
    push(l, m, found.distance);
    i += found.length;
    literalStart = i;
  }
  if (literalStart < i) {
    for (let p = literalStart; p < i; p++) literals.push(data[p]);
    push(i - literalStart, 0, 1);
  }
  while (literals.length % 4 !== 0) literals.push(0);
  return { block: writeBlock(triples, literals, i - from, options), end: i };
}

function countSymbols(values: number[], size: number): number[] {
  const counts = new Array<number>(size).fill(0);
  for (const v of values) counts[v]++;
  return counts;
}

/**
 * One block coding exactly these triples and literals (a multiple of 4), declaring `nRaw`
 * output bytes: tests use it to craft blocks a real encoder would never write.
 */
export function writeBlock(triples: Triple[], literals: number[], nRaw: number, options: LzfseBlockOptions): Uint8Array {
  const scale = (n: number): number => (options.shortTables ? (n * 3) / 4 : n);
  const lSymbols = triples.map((t) => symbolOf(t.l, L.base));
  const mSymbols = triples.map((t) => symbolOf(t.m, M.base));
  const dSymbols = triples.map((t) => symbolOf(t.d, D.base));
  const lFreq = normalise(countSymbols(lSymbols, 20), scale(L.states));
  const mFreq = normalise(countSymbols(mSymbols, 20), scale(M.states));
  const dFreq = normalise(countSymbols(dSymbols, 64), scale(D.states));
  const litFreq = normalise(countSymbols(literals, 256), scale(1024));

  // Literals: four lanes, encoded last to first.
  const lit = new FseEncoder(litFreq, 1024);
  const literalStates = [0, 0, 0, 0];
  const lw = new BitWriter();
  for (let i = literals.length - 1; i >= 0; i--) {
    const s = lit.step(literals[i], literalStates[i & 3]);
    lw.write(s.value, s.nbits);
    literalStates[i & 3] = s.before;
  }
  const literalPayload = lw.finish();

  // L/M/D: 8 zero bytes first, then each triple's D, M, L fields from the last triple back.
  const encoders = [new FseEncoder(lFreq, L.states), new FseEncoder(mFreq, M.states), new FseEncoder(dFreq, D.states)];
  const alphabets = [L, M, D];
  const states = [0, 0, 0];
  const mw = new BitWriter();
  mw.write(0, 16);
  mw.write(0, 16);
  mw.write(0, 16);
  mw.write(0, 16);
  for (let t = triples.length - 1; t >= 0; t--) {
    const values = [triples[t].l, triples[t].m, triples[t].d];
    const symbols = [lSymbols[t], mSymbols[t], dSymbols[t]];
    for (let a = 2; a >= 0; a--) {
      const s = encoders[a].step(symbols[a], states[a]);
      const vbits = alphabets[a].bits[symbols[a]];
      const extra = values[a] - alphabets[a].base[symbols[a]];
      mw.write(s.value * (1 << vbits) + extra, s.nbits + vbits);
      states[a] = s.before;
    }
  }
  const lmdPayload = mw.finish();
  const freqs = [...lFreq, ...mFreq, ...dFreq, ...litFreq];
  const fields: HeaderFields = {
    nRaw,
    nMatches: triples.length,
    nLiterals: literals.length,
    lit: literalPayload,
    lmd: lmdPayload,
    literalStates,
    states,
    freqs,
  };
  const header = options.version === 2 ? v2Header(fields) : v1Header(fields);
  const block = new Uint8Array(header.length + literalPayload.bytes.length + lmdPayload.bytes.length);
  block.set(header);
  block.set(literalPayload.bytes, header.length);
  block.set(lmdPayload.bytes, header.length + literalPayload.bytes.length);
  return block;
}

interface Payload {
  bytes: Uint8Array;
  bits: number;
}

/** What both header versions record. */
interface HeaderFields {
  nRaw: number;
  nMatches: number;
  nLiterals: number;
  lit: Payload;
  lmd: Payload;
  literalStates: number[];
  states: number[];
  freqs: number[];
}

function v2Header({ nRaw, nMatches, nLiterals, lit, lmd, literalStates, states, freqs }: HeaderFields): Uint8Array {
  const table = new BitWriter();
  for (const f of freqs) writeFrequency(table, f);
  const tableBytes = table.finish().bytes;
  const header = new Uint8Array(32 + tableBytes.length);
  const view = new DataView(header.buffer);
  view.setUint32(0, 0x32787662, true);
  view.setUint32(4, nRaw, true);
  const packed0 = BigInt(nLiterals) | (BigInt(lit.bytes.length) << 20n) | (BigInt(nMatches) << 40n) | (BigInt(lit.bits + 7) << 60n);
  const packed1 =
    BigInt(literalStates[0]) |
    (BigInt(literalStates[1]) << 10n) |
    (BigInt(literalStates[2]) << 20n) |
    (BigInt(literalStates[3]) << 30n) |
    (BigInt(lmd.bytes.length) << 40n) |
    (BigInt(lmd.bits + 7) << 60n);
  const packed2 = BigInt(header.length) | (BigInt(states[0]) << 32n) | (BigInt(states[1]) << 42n) | (BigInt(states[2]) << 52n);
  view.setBigUint64(8, packed0, true);
  view.setBigUint64(16, packed1, true);
  view.setBigUint64(24, packed2, true);
  header.set(tableBytes, 32);
  return header;
}

function v1Header({ nRaw, nMatches, nLiterals, lit, lmd, literalStates, states, freqs }: HeaderFields): Uint8Array {
  const header = new Uint8Array(772);
  const view = new DataView(header.buffer);
  view.setUint32(0, 0x31787662, true);
  view.setUint32(4, nRaw, true);
  view.setUint32(8, lit.bytes.length + lmd.bytes.length, true);
  view.setUint32(12, nLiterals, true);
  view.setUint32(16, nMatches, true);
  view.setUint32(20, lit.bytes.length, true);
  view.setUint32(24, lmd.bytes.length, true);
  view.setInt32(28, lit.bits, true);
  literalStates.forEach((s, q) => view.setUint16(32 + 2 * q, s, true));
  view.setInt32(40, lmd.bits, true);
  states.forEach((s, a) => view.setUint16(44 + 2 * a, s, true));
  freqs.forEach((f, i) => view.setUint16(50 + 2 * i, f, true));
  return header;
}
