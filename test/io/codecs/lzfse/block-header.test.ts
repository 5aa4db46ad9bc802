/** LZFSE v1/v2 block headers and the v2 frequency codes (format sheet §5), and their checks. */
import { describe, expect, it } from 'vitest';
import { CodecError } from '../../../../src/io/codecs/codec.js';
import { parseV1Header, parseV2Header } from '../../../../src/io/codecs/lzfse/block-header.js';
import { decodeV2Frequencies } from '../../../../src/io/codecs/lzfse/frequency-codes.js';
import { decodeLzfse } from '../../../../src/io/codecs/lzfse/index.js';
import { specVectors } from './helpers/spec-vectors.js';
import { BitWriter } from './helpers/bit-writer.js';
import { encodeMixed } from './helpers/stream-encoder.js';
import { sampleData } from './helpers/sample-data.js';
import { withField, withPackedField } from './helpers/stream-edit.js';

const exampleD = specVectors().find((v) => v.name.startsWith('D:'))!;
const D = exampleD.compressed;

function decodeFails(stream: Uint8Array, message: RegExp, outSize = 1 << 16): void {
  expect(() => decodeLzfse(stream, new Uint8Array(outSize))).toThrow(CodecError);
  expect(() => decodeLzfse(stream, new Uint8Array(outSize))).toThrow(message);
}

describe('v2 header', () => {
  it('unpacks every field of the sheet example D', () => {
    const freq = new Uint16Array(360);
    const h = parseV2Header(D, 0, freq);
    expect(h).toEqual({
      nRawBytes: 4096,
      headerSize: 137,
      nLiterals: 12,
      nLiteralPayloadBytes: 3,
      nMatches: 3,
      literalBits: -1,
      literalStates: [18, 411, 821, 502],
      nLmdPayloadBytes: 13,
      lmdBits: -7,
      lState: 55,
      mState: 36,
      dState: 219,
    });
    const nonzero = Object.fromEntries([...freq].flatMap((f, i) => (f === 0 ? [] : [[i, f]])));
    // L 0/5/7, M 20+0 and 20+19, D 40+0/1/5, literals 104 + 'a','b','c','e'.
    expect(nonzero).toEqual({ 0: 22, 5: 21, 7: 21, 20: 21, 39: 43, 40: 86, 41: 85, 45: 85, 201: 171, 202: 256, 203: 341, 205: 256 });
  });

  it('refuses out-of-range counts and states', () => {
    decodeFails(withPackedField(D, 8, 0, 20, 40_004), /literals, more than 40000/);
    decodeFails(withPackedField(D, 8, 0, 20, 13), /not a multiple of 4/);
    decodeFails(withPackedField(D, 8, 40, 20, 10_001), /more than 10000/);
    decodeFails(withPackedField(D, 24, 32, 10, 64), /L state 64/);
    decodeFails(withPackedField(D, 24, 42, 10, 100), /M state 100/);
    decodeFails(withPackedField(D, 24, 52, 10, 256), /D state 256/);
  });

  it('refuses a header size below 32 or past the input, and payloads past the input', () => {
    decodeFails(withPackedField(D, 24, 0, 32, 31), /header size 31/);
    decodeFails(withPackedField(D, 24, 0, 32, 0xffffffff), /needs 4294967295 bytes/);
    decodeFails(withPackedField(D, 16, 40, 20, 0xfffff), /header and payloads/);
    decodeFails(withPackedField(D, 8, 20, 20, 0xfffff), /header and payloads/);
  });

  it('refuses frequency tables that end early, run long, or overflow the state count', () => {
    // One byte fewer: the last codes need bits that are not there.
    decodeFails(withPackedField(D, 24, 0, 32, 136), /frequency table ends inside value 356/);
    decodeFails(withPackedField(D, 24, 0, 32, 138), /frequency table/);
    // First code e7 -> 0xf7 is 8 + 15 = 23: L frequencies then sum to 65 > 64.
    const tooMany = D.slice();
    tooMany[32] = 0xf7;
    decodeFails(tooMany, /L frequencies sum to 65/);
  });
});

describe('v2 frequency codes', () => {
  it('decodes each code length: 0, 1, 2, 3, 4..7, 8..23, 24..1047', () => {
    const w = new BitWriter();
    const codes: [number, number][] = [
      [0b00, 2],
      [0b10, 2],
      [0b001, 3],
      [0b101, 3],
      [0b11_011, 5],
      [0b1010_0111, 8],
      [(1023 << 4) | 0b1111, 14],
    ];
    for (const [v, n] of codes) w.write(v, n);
    const { bytes } = w.finish();
    const freq = new Uint16Array(7);
    decodeV2Frequencies(bytes, 0, bytes.length, freq);
    expect([...freq]).toEqual([0, 1, 2, 3, 7, 18, 1047]);
  });

  it('a code that needs bits past the table is a CodecError, even when they would be zeros', () => {
    const bytes = Uint8Array.of(0b1111); // a 14-bit code in a 1-byte table
    expect(() => decodeV2Frequencies(bytes, 0, 1, new Uint16Array(1))).toThrow(/ends inside value 0/);
  });

  it('an empty table is all zeros; an unread trailing byte is a CodecError', () => {
    const freq = new Uint16Array(4).fill(9);
    decodeV2Frequencies(new Uint8Array(0), 0, 0, freq);
    expect([...freq]).toEqual([0, 0, 0, 0]);
    expect(() => decodeV2Frequencies(Uint8Array.of(0, 0), 0, 2, new Uint16Array(4))).toThrow(/frequency table/);
  });
});

describe('v1 header', () => {
  const plain = sampleData('text', 5000, 3);
  const v1 = encodeMixed(plain, ['v1'], 5000);

  it('decodes a v1 block and reads its plain fields', () => {
    const freq = new Uint16Array(360);
    const h = parseV1Header(v1, 0, freq);
    expect(h.nRawBytes).toBe(5000);
    expect(h.headerSize).toBe(772);
    expect(freq.subarray(0, 20).reduce((a, b) => a + b, 0)).toBe(64);
    const out = new Uint8Array(5000);
    expect(decodeLzfse(v1, out)).toBe(5000);
    expect(Buffer.from(out).equals(Buffer.from(plain))).toBe(true);
  });

  it('refuses bit counts, states and frequencies out of range', () => {
    decodeFails(withField(v1, 28, 1, 'i32'), /literal bits 1/);
    decodeFails(withField(v1, 40, -8, 'i32'), /L\/M\/D bits -8/);
    decodeFails(withField(v1, 32, 1024, 'u16'), /literal state 1024/);
    decodeFails(withField(v1, 48, 256, 'u16'), /D state 256/);
    decodeFails(withField(v1, 50, 65, 'u16'), /L frequencies sum/);
    decodeFails(withField(v1, 258, 1025, 'u16'), /literal frequencies sum/);
    decodeFails(v1.subarray(0, 771), /v1 header/);
  });
});
