/**
 * A map asked for a few runs (REQ_ONE block status asks for one) looks only at the chunks those
 * runs cover: over thousands of partly written chunks, whose bitmaps are not in memory after an
 * open, it reads one bitmap slice, not all of them (issue 13, item 2: a REQ_ONE query over
 * 20,000 such chunks took 1.9 s).
 */
import { describe, expect, it } from 'vitest';
import { createAsifFile, openAsifFile } from '../../../src/formats/asif/index.js';
import { MemFile } from '../helpers/mem-file.js';

const KiB = 1024;
const C = 32 * KiB;
const CHUNKS = 2000;

/** Counts reads, for telling how much of the file a call looked at. */
class CountingFile extends MemFile {
  reads = 0;
  override read(buf: Uint8Array, position: number): Promise<void> {
    this.reads++;
    return super.read(buf, position);
  }
}

async function partlyWrittenImage(): Promise<CountingFile> {
  const made = new MemFile('partial.asif');
  await createAsifFile(made, { blockCount: (CHUNKS * C) / 512, chunkSize: C, maxSectorCount: (2 * CHUNKS * C) / 512 });
  const image = await openAsifFile(made);
  // 4 KiB at the start of every chunk: each one is status 11 with a bitmap.
  for (let c = 0; c < CHUNKS; c++) await image.write(Buffer.alloc(4 * KiB, 1), c * C);
  await image.close();
  return new CountingFile('partial.asif', made.bytes());
}

describe('ASIF map with maxRuns', () => {
  it('reads one bitmap slice for the first run, however many partly written chunks follow', async () => {
    const file = await partlyWrittenImage();
    const image = await openAsifFile(file, { bitmapCacheBytes: 64 * KiB });
    try {
      const opened = file.reads;
      const first = await image.map(0, image.size, 1);
      expect(first).toEqual([{ offset: 0, length: 4 * KiB, state: 'data' }]);
      expect(file.reads - opened).toBeLessThanOrEqual(1);
      const some = await image.map(0, image.size, 10);
      expect(some).toHaveLength(10);
      expect(some[9]).toEqual({ offset: 4 * C + 4 * KiB, length: C - 4 * KiB, state: 'absent' });
      expect(file.reads - opened).toBeLessThanOrEqual(6);
      // Without a limit, the whole map: every chunk's slice is needed.
      const all = await image.map(0, image.size);
      expect(all).toHaveLength(2 * CHUNKS);
    } finally {
      await image.close();
    }
  });
});
