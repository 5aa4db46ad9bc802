/**
 * Damaged streams: every truncation of a few valid streams and seeded random edits must decode
 * or throw CodecError, never another exception, never an access outside the input or the
 * output, never a write past output.length. Every decoder loop consumes input or produces
 * output, so each case ends; the cases run one after another in a bounded loop.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CodecError } from '../../../../src/io/codecs/codec.js';
import { decodeLzfse } from '../../../../src/io/codecs/lzfse/index.js';
import { ChunkType, dmgChunks } from './helpers/dmg-chunks.js';
import { guardedBytes } from './helpers/guarded-bytes.js';
import { sampleData } from './helpers/sample-data.js';
import { specVectors } from './helpers/spec-vectors.js';
import { encodeMixed } from './helpers/stream-encoder.js';

interface Sample {
  name: string;
  compressed: Uint8Array;
  size: number;
}

function samples(): Sample[] {
  const out: Sample[] = specVectors()
    .filter((v) => v.compressed.length > 20)
    .map((v) => ({ name: v.name, compressed: v.compressed, size: v.plain.length }));
  const dmg = readFileSync(resolve(import.meta.dirname, '../../../fixtures/dmg/compression-lzfse.dmg'));
  for (const chunk of dmgChunks(dmg).filter((c) => c.type === ChunkType.LZFSE).slice(0, 2)) {
    out.push({ name: `Apple chunk at sector ${chunk.sector}`, compressed: chunk.data, size: chunk.sectorCount * 512 });
  }
  const plain = sampleData('binary', 3000, 11);
  out.push({ name: 'all block kinds', compressed: encodeMixed(plain, ['v2', 'lzvn', 'v1', 'raw', 'lzvn-nop', 'v2-short'], 500), size: 3000 });
  return out;
}

const SLACK = 64;
const CANARY = 0xa5;

/** Decodes with guarded arrays; returns 'ok' or 'CodecError', throws anything else. */
function decodeGuarded(compressed: Uint8Array, size: number): 'ok' | 'CodecError' {
  const backing = new Uint8Array(size + SLACK + 16).fill(CANARY);
  const output = backing.subarray(0, size + SLACK);
  let outcome: 'ok' | 'CodecError' = 'ok';
  try {
    const n = decodeLzfse(guardedBytes(compressed, 'input'), guardedBytes(output, 'output'));
    if (!Number.isInteger(n) || n < 0 || n > output.length) throw new Error(`decode returned ${n}`);
  } catch (error) {
    if (!(error instanceof CodecError)) throw error;
    outcome = 'CodecError';
  }
  if (!backing.subarray(output.length).every((b) => b === CANARY)) throw new Error('bytes written past output.length');
  return outcome;
}

describe('LZFSE on damaged streams', () => {
  for (const sample of samples()) {
    it(`every truncation of ${sample.name} (${sample.compressed.length} bytes) is a CodecError`, () => {
      expect(decodeGuarded(sample.compressed, sample.size)).toBe('ok');
      for (let cut = 0; cut < sample.compressed.length; cut++) {
        expect(decodeGuarded(sample.compressed.slice(0, cut), sample.size), `cut at ${cut}`).toBe('CodecError');
      }
    });
  }

  it('3000 seeded random edits decode or fail with CodecError', () => {
    const all = samples();
    const edit = fc.record({
      at: fc.nat(),
      kind: fc.constantFrom('set', 'flip', 'insert', 'delete'),
      value: fc.integer({ min: 0, max: 255 }),
    });
    const outcomes = { ok: 0, CodecError: 0 };
    fc.assert(
      fc.property(fc.nat({ max: all.length - 1 }), fc.array(edit, { minLength: 1, maxLength: 6 }), (which, edits) => {
        const bytes = [...all[which].compressed];
        for (const e of edits) {
          const at = e.at % (bytes.length + 1);
          if (e.kind === 'insert') bytes.splice(at, 0, e.value);
          else if (at === bytes.length) continue;
          else if (e.kind === 'set') bytes[at] = e.value;
          else if (e.kind === 'flip') bytes[at] ^= 1 << (e.value & 7);
          else bytes.splice(at, 1);
        }
        outcomes[decodeGuarded(Uint8Array.from(bytes), all[which].size)]++;
      }),
      { seed: 0x1f5e, numRuns: 3000 },
    );
    // Both outcomes occur: the edits are neither all harmless nor all caught at the first byte.
    expect(outcomes.ok).toBeGreaterThan(0);
    expect(outcomes.CodecError).toBeGreaterThan(1000);
  });
});
