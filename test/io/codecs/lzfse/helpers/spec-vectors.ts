/**
 * The worked examples of shared/spec/lzfse.md §12, made by the reference `lzfse -encode`:
 * the compressed bytes and how to regenerate the original input.
 */

function hex(text: string): Uint8Array {
  return Uint8Array.from(text.trim().split(/\s+/), (b) => parseInt(b, 16));
}

function ascii(text: string): Uint8Array {
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

export interface SpecVector {
  name: string;
  compressed: Uint8Array;
  plain: Uint8Array;
}

export function specVectors(): SpecVector[] {
  return [
    {
      name: 'A: LZVN "hello hello hello hello"',
      compressed: hex(`62 76 78 6e 17 00 00 00 14 00 00 00 e6 68 65 6c
        6c 6f 20 38 06 f6 e1 6f 06 00 00 00 00 00 00 00 62 76 78 24`),
      plain: ascii('hello hello hello hello'),
    },
    {
      name: 'B: LZVN 300 bytes, lrg_l and lrg_m',
      compressed: hex(`62 76 78 6e 2c 01 00 00 26 00 00 00 e0 04 30 31
        32 33 34 35 36 37 38 39 41 42 43 44 45 46 47 48
        49 4a 38 14 f0 fb e3 48 49 4a 06 00 00 00 00 00
        00 00 62 76 78 24`),
      plain: ascii('0123456789ABCDEFGHIJ'.repeat(15)),
    },
    {
      name: 'C: raw "abc"',
      compressed: hex('62 76 78 2d 03 00 00 00 61 62 63 62 76 78 24'),
      plain: ascii('abc'),
    },
    {
      name: 'C: empty input',
      compressed: hex('62 76 78 2d 00 00 00 00 62 76 78 24'),
      plain: new Uint8Array(0),
    },
    {
      name: 'D: bvx2, 4096 bytes of "abecceb"',
      compressed: hex(`62 76 78 32 00 10 00 00 0c 00 30 00 00 03 00 60
        12 6c 56 b3 7d 0d 00 00 89 00 00 00 37 90 b0 0d
        e7 00 d7 5c 03 00 00 5c 03 00 00 00 c0 4f f0 3e
        7c 0f c0 f7 00 00 00 00 00 00 00 00 00 00 00 00
        00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
        00 00 00 00 00 00 00 00 00 00 00 fc 24 8f ce f7
        c4 a3 03 00 00 00 00 00 00 00 00 00 00 00 00 00
        00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
        00 00 00 00 00 00 00 00 00 80 23 31 00 00 00 00
        00 00 00 00 a8 b0 f5 ff 00 62 76 78 24`),
      plain: Uint8Array.from({ length: 4096 }, (_, i) => 0x61 + ((i * i) % 7)),
    },
  ];
}
