/**
 * Model-based tests: random sequences of writes, zeroes, discards, reads, flushes, reopens,
 * truncates and concurrent batches, run on an ASIF image and on the reference model
 * (helpers/disk-model.ts), on 512- and 4096-byte blocks, with small and standard chunks, as a
 * standalone image and as a layer, with a tiny bitmap cache or the default one.
 */
import fc from 'fast-check';
import { describe, it } from 'vitest';
import { AsifHarness, type HarnessConfig, type Len, type Op, type Pos } from '../helpers/asif-harness.js';
import { useTmpDir } from '../helpers/tmp-dir.js';

const tmp = useTmpDir('model');
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

const CONFIGS: HarnessConfig[] = [
  // 32 KiB chunks: one group per table, so tables (64 MiB each) and groups change often.
  { name: '512-byte blocks, 32 KiB chunks', blockSize: 512, chunkSize: 32 * KiB, maxSectorCount: 2 ** 22, size: 130 * MiB + 512 * 3, backend: 'mem' },
  // 256 KiB chunks at 4096: two groups of 4 GiB per 8 GiB table.
  { name: '4096-byte blocks, 256 KiB chunks', blockSize: 4096, chunkSize: 256 * KiB, maxSectorCount: 2 ** 22, size: 9 * GiB, backend: 'mem' },
  { name: '512-byte blocks, standard 1 MiB chunks, real file', blockSize: 512, size: 300 * MiB + 7 * 512, backend: 'fd' },
  { name: '4096-byte blocks, standard 1 MiB chunks', blockSize: 4096, size: 300 * MiB, backend: 'mem' },
];

const pos: fc.Arbitrary<Pos> = fc.record({
  window: fc.nat({ max: 7 }),
  frac: fc.double({ min: 0, max: 0.999, noNaN: true }),
  align: fc.constantFrom('byte', 'sector', 'sector', 'chunk'),
});
const len: fc.Arbitrary<Len> = fc.oneof(
  fc.record({ unit: fc.constant('bytes' as const), n: fc.integer({ min: 1, max: 9000 }), extra: fc.constant(0) }),
  fc.record({ unit: fc.constant('sectors' as const), n: fc.integer({ min: 1, max: 40 }), extra: fc.constant(0) }),
  fc.record({ unit: fc.constant('chunks' as const), n: fc.integer({ min: 1, max: 3 }), extra: fc.constantFrom(0, 0, 512, -512, 4096) }),
);
const io: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('write' as const), at: pos, len, seed: fc.nat(), fua: fc.constantFrom(false, false, false, true) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('zero' as const), at: pos, len, noHole: fc.boolean(), fast: fc.boolean(), fua: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('discard' as const), at: pos, len, fua: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('read' as const), at: pos, len }) },
);
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 10, arbitrary: io },
  { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('reopen' as const), peekReadOnly: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), to: fc.constantFrom('shrinkPartial', 'shrinkChunks', 'grow', 'original') }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('batch' as const), ops: fc.array(io, { minLength: 2, maxLength: 6 }) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('cluster' as const),
      at: pos,
      pieces: fc.array(
        fc.record({ gap: fc.nat({ max: 300 }), length: fc.integer({ min: 1, max: 700 }), zero: fc.constantFrom(false, false, false, true), seed: fc.nat() }),
        { minLength: 2, maxLength: 8 },
      ),
    }),
  },
);

const caseArb = fc.record({
  ops: fc.array(op, { minLength: 1, maxLength: 30 }),
  layerType: fc.constantFrom(null, 'overlay' as const, 'cache' as const),
  cacheBytes: fc.constantFrom(undefined, 1, 4000),
  jitterSeed: fc.nat(),
});

/** STACKBD_SOAK=N runs N times as many cases (for long bug hunts; the default keeps the suite quick). */
const soak = Math.max(1, Number(process.env.STACKBD_SOAK ?? 1));
let caseNumber = 0;

describe.each(CONFIGS)('ASIF engine against the model: $name', (config) => {
  it('agrees with the model on random operation sequences', async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async ({ ops, layerType, cacheBytes, jitterSeed }) => {
        const h = await AsifHarness.create(config, { layerType, cacheBytes, jitterSeed }, tmp(`case-${caseNumber++}.asif`));
        for (const o of ops) await h.run(o);
        await h.finish();
      }),
      { numRuns: (config.chunkSize ? 30 : 12) * soak, endOnFailure: true },
    );
  });
});
