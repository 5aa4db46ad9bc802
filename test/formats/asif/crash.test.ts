/**
 * Crash order: a recording file under the engine keeps every write and sync it issues while a
 * workload runs; crashes are then replayed into fresh files: every prefix that ends at a sync,
 * and hundreds of random cuts, some with a torn last write, some with the writes since the
 * last sync landing in any subset (a disk may reorder them). Each crashed file must open, check
 * without errors (leaked chunks are fine) and hold everything flushed before the cut
 * (helpers/crash-driver.ts says exactly what is allowed).
 *
 * Random workloads cover the common paths; the scenarios after them build, on purpose, each
 * situation one rule of the flush protocol exists for (map-store.ts, invariants 3–5).
 */
import { describe, expect, it } from 'vitest';
import type { LayerType } from '../../../src/formats/layer.js';
import { CrashDriver, verifyAllCrashes, type CrashImageConfig } from '../helpers/crash-driver.js';
import { patternBytes } from '../helpers/disk-model.js';
import { seededRandom } from '../helpers/mem-file.js';

const KiB = 1024;
const MiB = 1024 * KiB;
/** 512-byte blocks, 32 KiB chunks: a table maps 2048 chunks (64 MiB), one group. */
const SMALL_TABLE = 2048 * 32 * KiB;

interface RandomCase {
  name: string;
  image: CrashImageConfig;
  steps: number;
  randomCuts: number;
}

const small = (layerType: LayerType | null, seed: number, tinyCache = false): CrashImageConfig => {
  const size = 2 * SMALL_TABLE + 8 * 32 * KiB - 3 * 512;
  return {
    blockSize: 512,
    chunkSize: 32 * KiB,
    maxSectorCount: 2 ** 20,
    size,
    layerType,
    // The start, both sides of the first table boundary, and the end (where truncate works).
    windows: [
      [0, 16 * 32 * KiB],
      [SMALL_TABLE - 3 * 32 * KiB, SMALL_TABLE + 6 * 32 * KiB],
      [2 * SMALL_TABLE, size],
    ],
    tinyCache,
    seed,
  };
};

const RANDOM_CASES: RandomCase[] = [
  { name: '512/32K standalone, three tables', image: small(null, 1), steps: 70, randomCuts: 200 },
  { name: '512/32K overlay, three tables, tiny bitmap cache', image: small('overlay', 2, true), steps: 70, randomCuts: 200 },
  {
    name: '4096/256K overlay',
    image: { blockSize: 4096, chunkSize: 256 * KiB, maxSectorCount: 2 ** 20, size: 10 * 256 * KiB, layerType: 'overlay', windows: [[0, 10 * 256 * KiB]], seed: 3 },
    steps: 50,
    randomCuts: 120,
  },
  {
    name: '512/1M standard, cache layer',
    image: { blockSize: 512, chunkSize: MiB, size: 4 * MiB - 1536, layerType: 'cache', windows: [[0, 4 * MiB - 1536]], seed: 4 },
    steps: 20,
    randomCuts: 30,
  },
];

async function randomWorkload(d: CrashDriver, steps: number): Promise<void> {
  const { blockSize: bs, chunkSize: C, windows, layerType, size } = d.config;
  const rnd = seededRandom(d.config.seed * 7919);
  const int = (n: number): number => Math.floor(rnd() * n);
  const range = (): [number, number] => {
    const [ws, we] = windows[int(windows.length)];
    const end = Math.min(we, d.image.size);
    let off = ws + int(Math.max(1, end - ws));
    if (int(3) > 0) off -= off % bs;
    if (int(4) === 0) off -= off % C;
    const len = [1 + int(3 * bs), (1 + int(12)) * bs, C, 2 * C + bs][int(4)];
    return [off, Math.max(1, Math.min(len, end - off))];
  };
  for (let step = 0; step < steps; step++) {
    const choice = int(20);
    if (choice < 8) {
      const [off, len] = range();
      await d.write(off, patternBytes(len, d.config.seed * 1000 + step), int(6) === 0);
    } else if (choice < 10) {
      const [off, len] = range();
      await d.zero(off, len, { noHole: int(2) === 0, fast: int(3) === 0 });
    } else if (choice < 12) {
      const [off, len] = range();
      await d.discard(off, len);
    } else if (choice < 15) {
      await d.flush();
    } else if (choice < 17) {
      // Concurrent writes close together (often one chunk), never sharing a sector: two writes
      // patching one sector land one after the other, and a crash between them leaves a mix no
      // single step describes (the model tests cover shared sectors).
      const [start] = range();
      const jobs: Array<[number, Buffer]> = [];
      let off = start - (start % bs);
      const end = Math.min(d.image.size, windows.find(([ws, we]) => ws <= start && start < we)?.[1] ?? 0);
      for (let j = 0; j < 4 && off < end; j++) {
        const len = Math.min(1 + int(2 * bs), end - off);
        jobs.push([off, patternBytes(len, step * 10 + j)]);
        off = (Math.ceil((off + len) / bs) + int(2)) * bs;
      }
      await d.batch(jobs);
    } else if (choice < 18) {
      await d.reopen();
    } else if (layerType !== 'cache') {
      await d.truncate(int(2) === 0 ? size : size - C - 2 * bs * (1 + int(4)));
    }
  }
}

/** STACKBD_SOAK=N runs each random workload with N seeds (for long bug hunts). */
const soak = Math.max(1, Number(process.env.STACKBD_SOAK ?? 1));

describe.each(RANDOM_CASES)('crash consistency, random workload: $name', ({ image, steps, randomCuts }) => {
  it('every crash opens, checks without errors and keeps what was flushed', async () => {
    for (let k = 0; k < soak; k++) {
      const d = await CrashDriver.start({ ...image, seed: image.seed + 1000 * k });
      await randomWorkload(d, steps);
      const recording = await d.finish();
      expect(recording.log.filter((e) => e.kind === 'sync').length).toBeGreaterThan(10);
      expect(await verifyAllCrashes(recording, randomCuts)).toBeGreaterThan(randomCuts);
    }
  });
});

describe('crash consistency, scenarios', () => {
  const C = 32 * KiB;
  const chunk = (n: number, seed: number): Buffer => patternBytes(n * C, seed);

  it.each([null, 'overlay'] as const)(
    'a partly written chunk discarded and partly rewritten before one flush (layer type %s)',
    async (layerType) => {
      // Chunks freed by discards hold old data. Chunk 5 gets one of them (P) for a partial
      // write, then, before one flush, is discarded and partly rewritten in another (Q): its
      // new bitmap must never be paired with the entry 11(P) still on disk, or P's old bytes
      // would show (invariant 3: the detach step).
      const d = await CrashDriver.start(small(layerType, 11));
      await d.write(0, chunk(3, 1));
      await d.flush();
      await d.discard(0, 3 * C);
      await d.flush();
      await d.write(5 * C, patternBytes(4096, 2));
      await d.write(5 * C + 8192, patternBytes(2048, 3));
      await d.flush();
      await d.discard(5 * C, C);
      await d.write(5 * C + 16384, patternBytes(4096, 4));
      await d.write(5 * C + 8192, patternBytes(1024, 5));
      await d.flush();
      const recording = await d.finish();
      await verifyAllCrashes(recording, 0, true);
    },
  );

  it('a discarded chunk is not reused before the discard is committed', async () => {
    const d = await CrashDriver.start(small('overlay', 12));
    await d.write(0, chunk(2, 1));
    await d.flush();
    await d.discard(0, 2 * C);
    await d.write(10 * C, chunk(2, 2));
    await d.write(13 * C, patternBytes(3000, 3));
    await d.flush();
    const recording = await d.finish();
    await verifyAllCrashes(recording, 0, true);
  });

  it('new tables reach the disk before the directory flip that publishes them', async () => {
    const d = await CrashDriver.start(small('overlay', 13));
    for (const [i, at] of [SMALL_TABLE + C, 2 * SMALL_TABLE + 2 * C, 2 * C].entries()) {
      await d.write(at, patternBytes(5000, i));
      await d.flush();
    }
    await d.write(SMALL_TABLE - 2048, patternBytes(4096, 9));
    await d.write(2 * SMALL_TABLE + 5 * C + 512, patternBytes(4096, 10));
    await d.flush();
    const recording = await d.finish();
    expect(recording.log.filter((e) => e.kind === 'write' && e.position < C && e.bytes.length === 8).length).toBeGreaterThanOrEqual(3);
    await verifyAllCrashes(recording, 0, true);
  });

  it.each([null, 'overlay'] as const)('writes racing flushes into chunks whose bitmaps the flush is writing (layer type %s)', async (layerType) => {
    // A flush writes the slices it snapshotted. Bits that writes racing it add belong to data
    // it did not sync, so they must wait for the next flush (copy on write of lent slots), and
    // a lent slot must not be reused while the flush still writes from it.
    const d = await CrashDriver.start(small(layerType, 21 + (layerType ? 1 : 0)));
    for (let round = 0; round < 4; round++) {
      const a = round * 4 * C;
      const b = a + 2 * C;
      for (const [at, seed] of [
        [a, 0],
        [b, 1],
      ]) {
        await d.write(at + 512, patternBytes(1024, round * 10 + seed));
      }
      await d.flush();
      await d.write(a + 3 * 512, patternBytes(1024, round + 10));
      await d.write(b + 3 * 512, patternBytes(1024, round + 11));
      await d.flushRacing([
        // Chunk a: one sector, then the rest in one write (it fills up and its slice goes).
        [a, patternBytes(512, round + 20)],
        [a + 5 * 512, patternBytes(C - 5 * 512, round + 30)],
        // Chunk b: discarded whole while the flush writes its slice; a new chunk takes a slot.
        [b, C],
        [a + C + 7 * 512, patternBytes(512, round + 40)],
        [b + C + 9 * 512, patternBytes(512, round + 50)],
      ]);
    }
    await d.flush();
    const recording = await d.finish();
    await verifyAllCrashes(recording, 0, true);
  });

  it('a group bitmap chunk whose only partial chunk filled up before the flush still lies inside the file', async () => {
    const d = await CrashDriver.start(small(null, 14));
    await d.write(SMALL_TABLE + 4 * C, patternBytes(C / 2, 1));
    await d.write(SMALL_TABLE + 4 * C + C / 2, patternBytes(C / 2, 2));
    await d.flush();
    await d.reopen();
    const recording = await d.finish();
    await verifyAllCrashes(recording, 0, true);
  });
});
