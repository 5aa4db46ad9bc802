/**
 * LZFSE triples (format sheet §10) in blocks crafted with the test encoder: the checks a real
 * encoder never trips, and matches into earlier blocks.
 */
import { describe, expect, it } from 'vitest';
import { CodecError } from '../../../../src/io/codecs/codec.js';
import { decodeLzfse } from '../../../../src/io/codecs/lzfse/index.js';
import { type Triple, writeBlock } from './helpers/lzfse-block-encoder.js';
import { concatBytes, END_BLOCK } from './helpers/stream-edit.js';

const RAW_HELLO = concatBytes([0x62, 0x76, 0x78, 0x2d, 5, 0, 0, 0], Array.from('hello', (c) => c.charCodeAt(0)));

function literalsOf(text: string): number[] {
  const bytes = Array.from(text, (c) => c.charCodeAt(0));
  while (bytes.length % 4 !== 0) bytes.push(0);
  return bytes;
}

function stream(triples: Triple[], literals: string, nRaw: number, version: 1 | 2 = 2, prefix = RAW_HELLO): Uint8Array {
  return concatBytes(prefix, writeBlock(triples, literalsOf(literals), nRaw, { version }), END_BLOCK);
}

function decodeText(input: Uint8Array, size = 64): string {
  const out = new Uint8Array(size);
  return Buffer.from(out.subarray(0, decodeLzfse(input, out))).toString('latin1');
}

describe('LZFSE triples', () => {
  it('runs literals, matches, repeated distances and overlapping copies', () => {
    // "hello" | L 2 "ab", M 5 from D 7 | d = 0 repeats D 7 | L 1 "c", M 6 at D 1 (a run) | L 2 "de", M 0
    const triples = [
      { l: 2, m: 5, d: 7 },
      { l: 0, m: 3, d: 0 },
      { l: 1, m: 6, d: 1 },
      { l: 2, m: 0, d: 1 },
    ];
    for (const version of [1, 2] as const) {
      expect(decodeText(stream(triples, 'abcde', 19, version))).toBe('helloabhelloabh' + 'c'.repeat(7) + 'de');
    }
  });

  it('a block without literals (all literal states on symbol 0) copies from the block before', () => {
    expect(decodeText(stream([{ l: 0, m: 12, d: 5 }], '', 12))).toBe('hellohellohellohe');
  });

  const cases: [string, Uint8Array, RegExp][] = [
    ['a first triple that repeats a distance', stream([{ l: 1, m: 3, d: 0 }], 'a', 4), /repeats a distance before any/],
    ['a distance past the output start', stream([{ l: 1, m: 3, d: 7 }], 'a', 4), /distance 7 reaches before the start/],
    ['an M = 0 triple with a distance past the start', stream([{ l: 1, m: 0, d: 9 }], 'a', 1), /distance 9 reaches before/],
    ['more literals than the block has', stream([{ l: 5, m: 0, d: 1 }], 'abcd', 5), /more literals than the block has/],
    ['more output than declared', stream([{ l: 1, m: 3, d: 1 }], 'a', 3), /writes past the block's declared size/],
    ['less output than declared', stream([{ l: 1, m: 3, d: 1 }], 'a', 5), /produced 4 of its 5 bytes/],
  ];
  for (const [name, input, message] of cases) {
    it(`refuses ${name}`, () => {
      expect(() => decodeText(input)).toThrow(CodecError);
      expect(() => decodeText(input)).toThrow(message);
    });
  }

  it('refuses a block larger than the output before decoding it', () => {
    const input = stream([{ l: 0, m: 40, d: 1 }], '', 40);
    expect(decodeText(input, 45)).toHaveLength(45);
    expect(() => decodeText(input, 44)).toThrow(/block of 40 bytes at output byte 5 exceeds the 44-byte output/);
  });

  it('a declared size beyond any output (a decompression bomb) fails before any work', () => {
    const input = stream([{ l: 0, m: 2359, d: 1 }], '', 0xffffffff);
    expect(() => decodeText(input, 1 << 20)).toThrow(/exceeds the 1048576-byte output/);
  });
});
