/**
 * Test-only: LZFSE stream encoders that stand in for the reference `lzfse -encode` (Debian has
 * no package for it). `encodeLikeReference` follows the reference's choice of blocks (raw below
 * 8 bytes, LZVN below 4096, otherwise `bvx2` blocks); `encodeMixed` cycles through the block
 * kinds given, so matches of one kind reach into the output of another.
 */
import { encodeLzfseBlock } from './lzfse-block-encoder.js';
import { encodeLzvnBlock } from './lzvn-encoder.js';
import { MatchFinder } from './match-finder.js';

export type BlockKind = 'raw' | 'lzvn' | 'lzvn-nop' | 'v1' | 'v2' | 'v2-short';

const END = Uint8Array.of(0x62, 0x76, 0x78, 0x24);

function rawBlock(data: Uint8Array, from: number, to: number): Uint8Array {
  const block = new Uint8Array(8 + to - from);
  const view = new DataView(block.buffer);
  view.setUint32(0, 0x2d787662, true);
  view.setUint32(4, to - from, true);
  block.set(data.subarray(from, to), 8);
  return block;
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** Blocks of at most `blockSize` input bytes, their kinds taken from `kinds` in turn. */
export function encodeMixed(data: Uint8Array, kinds: readonly BlockKind[], blockSize = 65536): Uint8Array {
  const finder = new MatchFinder(data);
  const parts: Uint8Array[] = [];
  let pos = 0;
  for (let b = 0; pos < data.length; b++) {
    const kind = kinds[b % kinds.length];
    const to = Math.min(data.length, pos + blockSize);
    if (kind === 'raw') {
      parts.push(rawBlock(data, pos, to));
      finder.insertUpTo(to);
      pos = to;
    } else if (kind === 'lzvn' || kind === 'lzvn-nop') {
      parts.push(encodeLzvnBlock(data, pos, to, finder, kind === 'lzvn-nop'));
      pos = to;
    } else {
      const { block, end } = encodeLzfseBlock(data, pos, to, finder, { version: kind === 'v1' ? 1 : 2, shortTables: kind === 'v2-short' });
      parts.push(block);
      pos = end;
    }
  }
  if (data.length === 0) parts.push(rawBlock(data, 0, 0));
  parts.push(END);
  return concat(parts);
}

/** The reference encoder's block choice: raw below 8 bytes, one LZVN block below 4096, else LZFSE v2. */
export function encodeLikeReference(data: Uint8Array): Uint8Array {
  if (data.length < 8) return encodeMixed(data, ['raw'], Math.max(1, data.length));
  if (data.length < 4096) return encodeMixed(data, ['lzvn'], data.length);
  return encodeMixed(data, ['v2'], 1 << 20);
}
