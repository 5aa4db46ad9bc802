/** FSE table construction and symbol decoding (format sheet §6) on the sheet's worked cases. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CodecError } from '../../../../src/io/codecs/codec.js';
import { BackwardBitReader } from '../../../../src/io/codecs/lzfse/bit-stream.js';
import { L_BASE, L_EXTRA_BITS } from '../../../../src/io/codecs/lzfse/constants.js';
import { buildLiteralTable, FseValueDecoder } from '../../../../src/io/codecs/lzfse/fse.js';

interface Entry {
  symbol: number;
  nbits: number;
  delta: number;
}

function literalEntries(freq: number[], nStates: number): Entry[] {
  const table = new Int32Array(nStates);
  buildLiteralTable(freq, table);
  return Array.from(table, (e) => ({ symbol: e & 0xff, nbits: (e >>> 8) & 0xff, delta: e >>> 16 }));
}

function zeroBits(): BackwardBitReader {
  const r = new BackwardBitReader();
  r.init(new Uint8Array(8), 0, 8, 0, 'test');
  return r;
}

describe('FSE decoder tables', () => {
  it('N = 64, f = 22: states 0-9 read 2 bits (delta 24..60), states 10-21 read 1 bit (delta 0..22)', () => {
    const entries = literalEntries([22, 42], 64);
    for (let j = 0; j < 10; j++) expect(entries[j]).toEqual({ symbol: 0, nbits: 2, delta: 24 + 4 * j });
    for (let j = 10; j < 22; j++) expect(entries[j]).toEqual({ symbol: 0, nbits: 1, delta: 2 * (j - 10) });
    // f = 42: k = 1, j0 = 22; the 22 one-bit states come first, then 20 states read nothing.
    expect(entries[22]).toEqual({ symbol: 1, nbits: 1, delta: 42 * 2 - 64 });
    expect(entries[63]).toEqual({ symbol: 1, nbits: 0, delta: 19 });
  });

  it('a symbol owning every state reads 0 bits and keeps its state', () => {
    const entries = literalEntries([0, 0, 8], 8);
    entries.forEach((e, j) => expect(e).toEqual({ symbol: 2, nbits: 0, delta: j }));
  });

  it('literal state 18 of the sheet example D lies in "a" (f = 171): 3 bits, delta 488', () => {
    const freq = new Array<number>(256).fill(0);
    freq[0x61] = 171;
    freq[0x62] = 256;
    freq[0x63] = 341;
    freq[0x65] = 256;
    const entries = literalEntries(freq, 1024);
    expect(entries[18]).toEqual({ symbol: 0x61, nbits: 3, delta: 488 });
    expect(entries[171].symbol).toBe(0x62);
  });

  it('L state 55 of example D is symbol 7 (1 bit, L = 7): reading 0 moves to state 2', () => {
    const freq = new Array<number>(20).fill(0);
    freq[0] = 22;
    freq[5] = 21;
    freq[7] = 21;
    const l = new FseValueDecoder(64, L_EXTRA_BITS, L_BASE, 'L');
    l.reset(freq, 55);
    expect(l.decode(zeroBits())).toBe(7);
    expect(l.state).toBe(2);
  });

  it('adds extra bits to the base: L symbol 19 (base 60, 8 extra bits) with all state bits', () => {
    const freq = new Array<number>(20).fill(0);
    freq[19] = 64;
    const l = new FseValueDecoder(64, L_EXTRA_BITS, L_BASE, 'L');
    l.reset(freq, 5);
    const r = new BackwardBitReader();
    r.init(Uint8Array.of(0xab), 0, 1, 0, 'test');
    expect(l.decode(r)).toBe(60 + 0xab);
    expect(l.state).toBe(5);
  });

  it('frequencies summing past N are a CodecError; states past a short sum have no symbol', () => {
    expect(() => literalEntries([40, 25], 64)).toThrow(CodecError);
    const table = new Int32Array(64);
    buildLiteralTable([10, 20], table);
    expect(table[29]).toBeGreaterThanOrEqual(0);
    expect(table[30]).toBe(-1);
    const l = new FseValueDecoder(64, L_EXTRA_BITS, L_BASE, 'L');
    l.reset([10, 20], 30);
    expect(() => l.decode(zeroBits())).toThrow(/no symbol/);
  });

  it("each symbol's next states tile [0, N) exactly, whatever the frequencies", () => {
    const freqs = fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 1, maxLength: 40 }).filter((f) => {
      const sum = f.reduce((a, b) => a + b, 0);
      return sum > 0 && sum <= 256;
    });
    fc.assert(
      fc.property(freqs, (freq) => {
        const entries = literalEntries(freq, 256);
        freq.forEach((f, symbol) => {
          if (f === 0) return;
          const covered = new Uint8Array(256);
          for (const e of entries.filter((x, s) => x.symbol === symbol && s < freq.reduce((a, b) => a + b, 0))) {
            for (let v = 0; v < 1 << e.nbits; v++) covered[e.delta + v]++;
          }
          expect(covered.every((c) => c === 1)).toBe(true);
        });
      }),
      { seed: 2, numRuns: 200 },
    );
  });
});
