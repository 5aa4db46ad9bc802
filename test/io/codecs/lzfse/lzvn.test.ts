/** LZVN blocks built by hand from the opcode table (format sheet §4): each instruction, each check. */
import { describe, expect, it } from 'vitest';
import { CodecError } from '../../../../src/io/codecs/codec.js';
import { decodeLzfse } from '../../../../src/io/codecs/lzfse/index.js';
import { concatBytes, END_BLOCK } from './helpers/stream-edit.js';

const EOS = [0x06, 0, 0, 0, 0, 0, 0, 0];

function bytesOf(text: string): number[] {
  return Array.from(text, (c) => c.charCodeAt(0));
}

function lzvnBlock(nRaw: number, payload: number[]): Uint8Array {
  const header = new Uint8Array(12);
  const view = new DataView(header.buffer);
  view.setUint32(0, 0x6e787662, true);
  view.setUint32(4, nRaw, true);
  view.setUint32(8, payload.length, true);
  return concatBytes(header, payload);
}

function rawBlock(text: string): Uint8Array {
  return concatBytes([0x62, 0x76, 0x78, 0x2d, text.length, 0, 0, 0], bytesOf(text));
}

function decodeText(stream: Uint8Array, size = 256): string {
  const out = new Uint8Array(size);
  const n = decodeLzfse(stream, out);
  return Buffer.from(out.subarray(0, n)).toString('latin1');
}

/** What a match appends, by the sheet's rule out[p] = out[p - D], one byte at a time. */
function withMatch(text: string, distance: number, length: number): string {
  let out = text;
  for (let i = 0; i < length; i++) out += out[out.length - distance];
  return out;
}

describe('LZVN instructions', () => {
  it('decodes lrg_l, sml_d, pre_d, sml_m, lrg_m, med_d, lrg_d, both no-ops, sml_l and eos', () => {
    let expected = 'ABCDEFGHIJKLMNOP';
    expected = withMatch(expected + 'x', 16, 3);
    expected = withMatch(expected + 'yz', 16, 4);
    expected = withMatch(expected, 16, 2);
    expected = withMatch(expected, 16, 16);
    expected = withMatch(expected, 44, 5);
    expected = withMatch(expected, 1, 3);
    expected += 'z';
    const payload = [
      ...[0xe0, 0x00, ...bytesOf('ABCDEFGHIJKLMNOP')], // lrg_l: L = 0 + 16
      ...[0x40, 16, ...bytesOf('x')], // sml_d: L 1, M 3, D 16
      ...[0x8e, ...bytesOf('yz')], // pre_d: L 2, M 4
      0xf2, // sml_m: M 2
      ...[0xf0, 0x00], // lrg_m: M 16
      ...[0xa0, (44 << 2) | 2, 0], // med_d: L 0, M 5, D 44
      ...[0x07, 1, 0], // lrg_d: L 0, M 3, D 1
      0x0e,
      0x16, // nops
      ...[0xe1, ...bytesOf('z')], // sml_l: L 1
      ...EOS,
    ];
    expect(expected).toHaveLength(53);
    expect(decodeText(concatBytes(lzvnBlock(53, payload), END_BLOCK))).toBe(expected);
  });

  it('matches reach into the output of an earlier block', () => {
    const stream = concatBytes(rawBlock('hello'), lzvnBlock(8, [0x28, 5, ...EOS]), END_BLOCK); // L 0, M 8, D 5
    expect(decodeText(stream)).toBe('hellohellohel');
  });

  it('the previous distance does not survive into the next block', () => {
    const first = lzvnBlock(3, [0x00, 2, ...EOS]); // L 0, M 3, D 2
    const stream = concatBytes(rawBlock('ab'), first, lzvnBlock(1, [0xf1, ...EOS]), END_BLOCK);
    expect(() => decodeText(stream)).toThrow(/match distance 0/);
    expect(decodeText(concatBytes(rawBlock('ab'), first, END_BLOCK))).toBe('ababa');
  });
});

describe('LZVN checks', () => {
  const undefinedOpcodes = [0x1e, 0x26, 0x2e, 0x36, 0x3e];
  for (let b = 0x70; b < 0x80; b++) undefinedOpcodes.push(b);
  for (let b = 0xd0; b < 0xe0; b++) undefinedOpcodes.push(b);

  it('refuses all 37 undefined opcodes', () => {
    expect(undefinedOpcodes).toHaveLength(37);
    for (const op of undefinedOpcodes) {
      const stream = concatBytes(rawBlock('abcd'), lzvnBlock(8, [op, 0, 0, 0, 0, ...EOS]), END_BLOCK);
      expect(() => decodeText(stream), `opcode 0x${op.toString(16)}`).toThrow(/undefined opcode/);
    }
  });

  const cases: [string, Uint8Array, RegExp][] = [
    ['sml_d with D = 0', concatBytes(lzvnBlock(4, [0xe1, 0x61, 0x00, 0x00, ...EOS]), END_BLOCK), /match distance 0/],
    ['a distance past the output start', concatBytes(lzvnBlock(4, [0xe1, 0x61, 0x00, 0x02, ...EOS]), END_BLOCK), /match distance 2/],
    ['sml_m with no distance yet', concatBytes(lzvnBlock(2, [0xe1, 0x61, 0xf1, ...EOS]), END_BLOCK), /match distance 0/],
    ['pre_d with no distance yet', concatBytes(lzvnBlock(4, [0x46, 0x61, ...EOS]), END_BLOCK), /match distance 0/],
    ['no end-of-stream', concatBytes(lzvnBlock(1, [0xe1, 0x61]), END_BLOCK), /without end-of-stream/],
    ['a byte after end-of-stream', concatBytes(lzvnBlock(1, [0xe1, 0x61, ...EOS, 0]), END_BLOCK), /not at the payload end/],
    ['a short end-of-stream', concatBytes(lzvnBlock(1, [0xe1, 0x61, 0x06, 0, 0]), END_BLOCK), /not at the payload end/],
    ['fewer bytes than declared', concatBytes(lzvnBlock(2, [0xe1, 0x61, ...EOS]), END_BLOCK), /produced 1 of its 2 bytes/],
    ['literals past the declared size', concatBytes(lzvnBlock(1, [0xe2, 0x61, 0x62, ...EOS]), END_BLOCK), /literals write past/],
    ['a match past the declared size', concatBytes(lzvnBlock(3, [0xe1, 0x61, 0x00, 0x01, ...EOS]), END_BLOCK), /match writes past/],
    ['literals past the payload', concatBytes(lzvnBlock(5, [0xe5, 0x61, 0x62]), END_BLOCK), /run past the payload/],
    ['an instruction cut by the payload end', concatBytes(lzvnBlock(1, [0xe1, 0x61, 0xa0, 0x00]), END_BLOCK), /instruction cut/],
    ['a payload past the input', lzvnBlock(1, [0xe1, 0x61, ...EOS]).subarray(0, 20), /LZVN block at byte 0 needs 22 bytes/],
  ];
  for (const [name, stream, message] of cases) {
    it(`refuses ${name}`, () => {
      expect(() => decodeText(stream)).toThrow(CodecError);
      expect(() => decodeText(stream)).toThrow(message);
    });
  }

  it('refuses a block larger than the output buffer before writing it', () => {
    const stream = concatBytes(lzvnBlock(4, [0xe1, 0x61, 0x00, 0x01, ...EOS]), END_BLOCK); // 'a', then M 3 at D 1
    expect(decodeText(stream, 4)).toBe('aaaa');
    expect(() => decodeText(stream, 3)).toThrow(/exceeds the 3-byte output/);
  });
});
