/**
 * Tables held as pages: they read and write like a Buffer of the same bytes, only non-zero
 * pages exist, and an open empty overlay holds one page of table, not a whole 1 MiB table.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createAsif } from '../../../src/formats/asif/index.js';
import type { ChunkStatus } from '../../../src/formats/asif/layout.js';
import { loadMap } from '../../../src/formats/asif/load.js';
import { PagedTable } from '../../../src/formats/asif/paged-table.js';
import { throwingSink } from '../../../src/formats/asif/problems.js';
import { openFdFile } from '../../../src/io/fd-file.js';
import { useTmpDir } from '../helpers/tmp-dir.js';

const tmp = useTmpDir('paged-table');
import { entryChunk, entryStatus, writeEntry } from '../../../src/formats/asif/table.js';

const SIZE = 64 * 1024;

describe('PagedTable', () => {
  it('reads and writes like a Buffer of the same bytes', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: SIZE / 8 - 1 }), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 2 ** 40 })), { maxLength: 60 }),
        fc.uint8Array({ minLength: 0, maxLength: 512 }),
        (writes, loaded) => {
          const model = Buffer.alloc(SIZE);
          const table = new PagedTable(SIZE);
          // Some initial bytes, loaded from "disk" at page 2.
          Buffer.from(loaded).copy(model, 8192);
          const disk = Buffer.alloc(8192);
          Buffer.from(loaded).copy(disk);
          table.load(disk, 8192);
          for (const [entry, status, chunk] of writes) {
            const c = status === 0 || status === 2 ? 0 : chunk;
            writeEntry(model, entry * 8, status as ChunkStatus, c);
            writeEntry(table, entry * 8, status as ChunkStatus, c);
          }
          // Every entry written, its neighbours, and the loaded page's entries read alike.
          const offsets = new Set<number>();
          for (const [entry] of writes) for (const off of [entry * 8 - 8, entry * 8, entry * 8 + 8]) if (off >= 0 && off < SIZE) offsets.add(off);
          for (let off = 8192; off < 8192 + 512; off += 8) offsets.add(off);
          for (const off of offsets) {
            expect(entryStatus(table, off)).toBe(entryStatus(model, off));
            expect(entryChunk(table, off)).toBe(entryChunk(model, off));
          }
          expect(table.copy(0, SIZE).equals(model)).toBe(true);
          expect(table.copy(4000, 12300).equals(model.subarray(4000, 12300))).toBe(true);
          let nonZeroPages = 0;
          for (let p = 0; p < SIZE; p += 4096) if (!model.subarray(p, p + 4096).every((b) => b === 0)) nonZeroPages++;
          // Pages exist only where something non-zero was loaded or written (a later zero write keeps its page).
          expect(table.pageCount).toBeGreaterThanOrEqual(nonZeroPages);
          expect(table.pageCount).toBeLessThanOrEqual(new Set([...writes.filter((w) => w[1] !== 0).map((w) => (w[0] * 8) >> 12), ...(loaded.some((b) => b) ? [2, 3] : [])]).size);
        },
      ),
    );
  });

  it('gives a new table as page copies and zero runs that rebuild its bytes exactly', () => {
    const table = new PagedTable(SIZE);
    for (const entry of [3, 700, 701, 5000, SIZE / 8 - 1]) writeEntry(table, entry * 8, 1, entry + 10);
    const zeros = Buffer.alloc(3 * 4096);
    const rebuilt = Buffer.alloc(SIZE, 0xaa);
    let end = 0;
    for (const w of table.writes(zeros)) {
      expect(w.offset).toBe(end);
      expect(w.bytes.length).toBeLessThanOrEqual(zeros.length);
      w.bytes.copy(rebuilt, w.offset);
      end = w.offset + w.bytes.length;
    }
    expect(end).toBe(SIZE);
    expect(rebuilt.equals(table.copy(0, SIZE))).toBe(true);
    // Page copies, not views: changing the table afterwards leaves the writes as they were.
    const before = Buffer.concat(table.writes(zeros).map((w) => w.bytes));
    const writes = table.writes(zeros);
    writeEntry(table, 3 * 8, 1, 999);
    expect(Buffer.concat(writes.map((w) => w.bytes)).equals(before)).toBe(true);
  });

  it('writing zeros into an absent page allocates nothing', () => {
    const table = new PagedTable(SIZE);
    writeEntry(table, 4096 * 3, 0, 0);
    expect(table.pageCount).toBe(0);
    expect(table.copy(0, SIZE).every((b) => b === 0)).toBe(true);
  });
});

describe('loading a map', () => {
  it('keeps one page of table for an empty 1 GiB overlay, not the whole table', async () => {
    const path = tmp('empty.asif');
    await createAsif(path, { blockCount: 2 * 1024 * 1024, blockSize: 512, layerType: 'overlay', parentUUID: null, parentPin: { size: 1 } });
    const file = await openFdFile(path, { readOnly: true });
    try {
      const map = await loadMap(file, throwingSink(path));
      expect(map).not.toBeNull();
      const tables = [...(map?.tables.values() ?? [])];
      expect(tables.length).toBeGreaterThan(0);
      for (const t of tables) {
        expect(t.length).toBe(map?.geometry.chunkSize);
        expect(t.pageCount).toBe(1);
      }
    } finally {
      await file.close();
    }
  });
});
