/**
 * Test-only: deterministic sample inputs of several shapes (same seed, same bytes), for the
 * round-trip tests and the decode benchmark.
 */
import { seededRandom } from '../../../../formats/helpers/mem-file.js';

export type Shape = 'random' | 'text' | 'runs' | 'binary';

/** 32-bit values from the project's seeded PRNG. */
function prng(seed: number): () => number {
  const random = seededRandom(seed);
  return () => Math.floor(random() * 2 ** 32);
}

const WORDS = 'the of and a to in is you that it he was for on are as with his they at be this have from or one had by word but not what all were we when your can said there use an each which she do how their if will up other about out many then them these so some her would make like him into time has look two more write go see number no way could people my than first water been call who oil its now find long down day did get come made may part'.split(' ');

export function sampleData(shape: Shape, size: number, seed: number): Uint8Array {
  const next = prng(seed);
  const out = new Uint8Array(size);
  let pos = 0;
  const put = (byte: number): void => {
    if (pos < size) out[pos++] = byte;
  };
  while (pos < size) {
    if (shape === 'random') {
      put(next() & 0xff);
    } else if (shape === 'text') {
      for (const c of WORDS[next() % WORDS.length]) put(c.charCodeAt(0));
      put(next() % 13 === 0 ? 10 : 32);
    } else if (shape === 'runs') {
      const byte = next() % 3 === 0 ? 0 : next() & 0xff;
      const length = 1 + (next() % 5000);
      for (let i = 0; i < length; i++) put(byte);
    } else {
      binaryPiece(out, pos, next, (n) => (pos += n));
    }
  }
  return out;
}

/** A record-like piece: counters, a near copy of something far back, a zero span or noise. */
function binaryPiece(out: Uint8Array, pos: number, next: () => number, advance: (n: number) => void): void {
  const room = out.length - pos;
  const kind = next() % 4;
  let n = Math.min(room, 16 + (next() % 2048));
  if (kind === 0) {
    for (let i = 0; i < n; i += 4) out[pos + i] = (pos + i) & 0xff;
  } else if (kind === 1 && pos > 0) {
    // A copy from up to 300 000 bytes back: LZVN cannot reach it, LZFSE's largest D symbols can.
    const from = Math.max(0, pos - 1 - (next() % 300_000));
    n = Math.min(n, pos - from);
    out.copyWithin(pos, from, from + n);
    out[pos + (next() % n)] ^= 0x5a;
  } else if (kind === 2) {
    out.fill(0, pos, pos + n);
  } else {
    for (let i = 0; i < n; i++) out[pos + i] = next() & 0xff;
  }
  advance(n);
}
