/** The block sequence of an LZFSE stream (format sheet §2, §3): magics, raw blocks, the end. */
import { describe, expect, it } from 'vitest';
import { CodecError } from '../../../../src/io/codecs/codec.js';
import { decodeLzfse } from '../../../../src/io/codecs/lzfse/index.js';
import { concatBytes, END_BLOCK } from './helpers/stream-edit.js';

const RAW_ABC = [0x62, 0x76, 0x78, 0x2d, 3, 0, 0, 0, 0x61, 0x62, 0x63];

function decode(input: number[] | Uint8Array, size = 16): number {
  return decodeLzfse(concatBytes(input), new Uint8Array(size));
}

describe('LZFSE stream', () => {
  it('decodes any number of blocks, in any order, into one output', () => {
    const out = new Uint8Array(9);
    expect(decodeLzfse(concatBytes(RAW_ABC, RAW_ABC, [0x62, 0x76, 0x78, 0x2d, 0, 0, 0, 0], RAW_ABC, END_BLOCK), out)).toBe(9);
    expect(Buffer.from(out).toString()).toBe('abcabcabc');
    expect(decode(END_BLOCK)).toBe(0);
  });

  const cases: [string, number[], RegExp][] = [
    ['an empty input', [], /ends at byte 0 without an end-of-stream block/],
    ['a stream without its end block', RAW_ABC, /ends at byte 11 without an end-of-stream block/],
    ['a cut magic', [...RAW_ABC, 0x62, 0x76, 0x78], /block magic at byte 11 needs 4 bytes/],
    ['an unknown magic', [0x62, 0x76, 0x78, 0x33, ...END_BLOCK], /unknown block magic 0x33787662 at byte 0/],
    ['bytes after the end block', [...RAW_ABC, ...END_BLOCK, 0], /1 bytes follow the end-of-stream block at byte 11/],
    ['a cut raw header', [0x62, 0x76, 0x78, 0x2d, 3, 0], /raw block header at byte 0 needs 8 bytes/],
    ['a raw block longer than the input', [0x62, 0x76, 0x78, 0x2d, 9, 0, 0, 0, 0x61, ...END_BLOCK], /raw block at byte 0 needs 17 bytes/],
    ['a cut LZFSE v2 header', [0x62, 0x76, 0x78, 0x32, 0, 0, 0, 0, 0, 0], /LZFSE v2 header at byte 0 needs 32 bytes/],
  ];
  for (const [name, input, message] of cases) {
    it(`refuses ${name}`, () => {
      expect(() => decode(input)).toThrow(CodecError);
      expect(() => decode(input)).toThrow(message);
    });
  }

  it('refuses a raw block larger than the output, and writes nothing past it', () => {
    const backing = new Uint8Array(8).fill(0xee);
    expect(() => decodeLzfse(concatBytes(RAW_ABC, END_BLOCK), backing.subarray(0, 2))).toThrow(/exceeds the 2-byte output/);
    expect([...backing]).toEqual(new Array(8).fill(0xee));
  });
});
