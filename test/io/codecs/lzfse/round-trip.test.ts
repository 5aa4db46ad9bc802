/**
 * Round trips through the test encoders (stand-ins for the reference `lzfse -encode`, which
 * Debian does not package): generated data of many shapes and sizes, every block kind, matches
 * that reach into earlier blocks of other kinds.
 */
import { describe, expect, it } from 'vitest';
import { decodeLzfse } from '../../../../src/io/codecs/lzfse/index.js';
import { sampleData } from './helpers/sample-data.js';
import { type BlockKind, encodeLikeReference, encodeMixed } from './helpers/stream-encoder.js';

function roundTrip(plain: Uint8Array, compressed: Uint8Array): void {
  // One spare byte: the decoder must stop at the stream's own size, not at the buffer's.
  const out = new Uint8Array(plain.length + 1);
  const n = decodeLzfse(compressed, out);
  expect(n).toBe(plain.length);
  expect(Buffer.compare(Buffer.from(out.subarray(0, n)), Buffer.from(plain))).toBe(0);
}

const SIZES = [0, 1, 7, 8, 4095, 4096, 1 << 20, 5 << 20];
const SHAPES = ['random', 'text', 'runs', 'binary'] as const;

describe('LZFSE round trips, block choice of the reference encoder', () => {
  for (const shape of SHAPES) {
    for (const size of SIZES) {
      it(`${shape}, ${size} bytes`, () => {
        const plain = sampleData(shape, size, size + 17);
        roundTrip(plain, encodeLikeReference(plain));
      });
    }
  }
});

describe('LZFSE round trips, mixed block kinds', () => {
  const MIXES: { name: string; kinds: BlockKind[]; blockSize: number }[] = [
    { name: 'v1 only', kinds: ['v1'], blockSize: 100_000 },
    { name: 'v2 with unassigned states', kinds: ['v2-short'], blockSize: 100_000 },
    { name: 'all kinds in turn', kinds: ['v2', 'lzvn', 'raw', 'v1', 'lzvn-nop', 'v2-short'], blockSize: 20_000 },
    { name: 'small blocks', kinds: ['lzvn', 'v2', 'raw'], blockSize: 333 },
  ];
  for (const mix of MIXES) {
    for (const shape of SHAPES) {
      it(`${mix.name}, ${shape}`, () => {
        const plain = sampleData(shape, 300_000, 99);
        roundTrip(plain, encodeMixed(plain, mix.kinds, mix.blockSize));
      });
    }
  }
});
