/** The backward bit reader (format sheet §7) on hand-worked payloads and against the test writer. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CodecError } from '../../../../src/io/codecs/codec.js';
import { BackwardBitReader } from '../../../../src/io/codecs/lzfse/bit-stream.js';
import { BitWriter } from './helpers/bit-writer.js';

function reader(bytes: number[], bits: number, start = 0): BackwardBitReader {
  const r = new BackwardBitReader();
  r.init(Uint8Array.from(bytes), start, bytes.length, bits, 'test');
  return r;
}

describe('BackwardBitReader', () => {
  it('reads fields from the end, most significant bit first, skipping the zero padding', () => {
    // Bytes 0xAC 0x05 with bits = -5: 11 valid bits, the top 5 bits of 0x05 are padding.
    const r = reader([0xac, 0x05], -5);
    expect(r.remaining()).toBe(11);
    expect(r.read(3)).toBe(0b101);
    expect(r.read(4)).toBe(0b1010);
    expect(r.read(0)).toBe(0);
    expect(r.read(4)).toBe(0b1100);
    expect(r.remaining()).toBe(0);
  });

  it('reads the first literal state bits of the sheet example D (payload 80 23 31, bits -1)', () => {
    const r = reader([0x80, 0x23, 0x31], -1);
    expect(r.remaining()).toBe(23);
    expect(r.read(3)).toBe(3);
  });

  it('fails on a read past the payload start, never touching bytes before it', () => {
    // Bytes before `start` are not part of the payload; 9 bits are there, not 10.
    const r = reader([0xff, 0xff, 0x01, 0x01], -7, 2);
    expect(r.remaining()).toBe(9);
    expect(() => r.read(10)).toThrow(CodecError);
    const again = reader([0xff, 0xff, 0x01, 0x01], -7, 2);
    expect(again.read(9)).toBe(0b1_0000_0001);
    expect(() => again.read(1)).toThrow(/underflow/);
  });

  it('fails on nonzero padding bits and on a bit count outside -7..0', () => {
    expect(() => reader([0x85], -5)).toThrow(/padding/);
    expect(() => reader([0x01], 1)).toThrow(CodecError);
    expect(() => reader([0x01], -8)).toThrow(CodecError);
  });

  it('an empty payload must declare 0 bits and has nothing to read', () => {
    const r = reader([], 0);
    expect(r.read(0)).toBe(0);
    expect(() => r.read(1)).toThrow(CodecError);
    expect(() => reader([], -3)).toThrow(CodecError);
  });

  it('reads back, in reverse order, any fields the forward writer wrote', () => {
    const field = fc.integer({ min: 0, max: 23 }).chain((n) => fc.tuple(fc.constant(n), fc.integer({ min: 0, max: 2 ** n - 1 })));
    fc.assert(
      fc.property(fc.array(field, { maxLength: 60 }), (fields) => {
        const w = new BitWriter();
        for (const [n, v] of fields) w.write(v, n);
        const { bytes, bits } = w.finish();
        const r = new BackwardBitReader();
        r.init(bytes, 0, bytes.length, bits, 'test');
        for (let i = fields.length - 1; i >= 0; i--) expect(r.read(fields[i][0])).toBe(fields[i][1]);
        expect(r.remaining()).toBe(0);
      }),
      { seed: 1, numRuns: 300 },
    );
  });
});

describe('BackwardBitReader refill and take', () => {
  it('a refill buffers 24 bits, or all that is left; take never loads more', () => {
    const r = reader([0x12, 0x34, 0x56, 0x78], 0);
    r.refill();
    expect(r.take(12)).toBe(0x785);
    expect(r.take(12)).toBe(0x634);
    expect(() => r.take(1)).toThrow(/underflow/);
    r.refill();
    expect(r.take(8)).toBe(0x12);
    expect(r.remaining()).toBe(0);
  });
});
