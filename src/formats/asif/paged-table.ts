/**
 * A table (spec §5) held in memory as pages of PAGE bytes, of which only those holding a
 * non-zero byte exist. A table is one chunk (1 MiB) and maps 126 GiB, but a small or sparsely
 * written image uses a few entries of it: an empty overlay's only table holds the metadata
 * chunk's entry, a 1 GiB disk uses the first 8 KiB of its data table. Keeping whole tables cost
 * 1 MiB per open image (500 exports: 500 MiB); pages cost what is used.
 *
 * - Stores: the pages that were loaded non-zero or written since; an absent page reads as zeros.
 * - Invariants: reads and writes are of whole aligned 32-bit words (entries are 8-byte aligned,
 *   pages a multiple of 8), so no access straddles two pages; writing zero into an absent page
 *   allocates nothing; `copy` gives the exact bytes a Buffer table would hold.
 */
import type { WordBytes } from './directory.js';

const PAGE_SHIFT = 12;
const PAGE = 1 << PAGE_SHIFT;
const PAGE_MASK = PAGE - 1;

/** What the table accessors (table.ts) need of a table; a Buffer is one too. */
export interface TableBytes extends WordBytes {
  readUInt8(offset: number): number;
}

function isZero(bytes: Buffer): boolean {
  for (let i = 0; i + 4 <= bytes.length; i += 4) if (bytes.readUInt32LE(i) !== 0) return false;
  for (let i = bytes.length & ~3; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

export class PagedTable implements TableBytes {
  private readonly pages: Array<Buffer | undefined>;

  constructor(readonly length: number) {
    this.pages = new Array<Buffer | undefined>(Math.ceil(length / PAGE));
  }

  /** Takes `bytes`, the table's bytes from `at` on (`at` a multiple of the page size), keeping the non-zero pages. */
  load(bytes: Buffer, at: number): void {
    for (let pos = 0; pos < bytes.length; pos += PAGE) {
      const part = bytes.subarray(pos, Math.min(pos + PAGE, bytes.length));
      const index = (at + pos) >>> PAGE_SHIFT;
      if (isZero(part)) {
        this.pages[index] = undefined;
        continue;
      }
      const page = Buffer.alloc(PAGE);
      part.copy(page);
      this.pages[index] = page;
    }
  }

  /** Pages that exist (for memory accounting in tests). */
  get pageCount(): number {
    return this.pages.reduce((n, p) => n + (p ? 1 : 0), 0);
  }

  readUInt8(offset: number): number {
    const page = this.pages[offset >>> PAGE_SHIFT];
    return page === undefined ? 0 : page[offset & PAGE_MASK];
  }

  readUInt32BE(offset: number): number {
    const page = this.pages[offset >>> PAGE_SHIFT];
    return page === undefined ? 0 : page.readUInt32BE(offset & PAGE_MASK);
  }

  writeUInt32BE(value: number, offset: number): number {
    const index = offset >>> PAGE_SHIFT;
    let page = this.pages[index];
    if (page === undefined) {
      if (value === 0) return offset + 4;
      page = Buffer.alloc(PAGE);
      this.pages[index] = page;
    }
    page.writeUInt32BE(value, offset & PAGE_MASK);
    return offset + 4;
  }

  /**
   * The whole table as writes for a new table chunk: a copy of each page that exists, and the
   * runs of absent pages as views of `zeros` (at most its length each), so that writing a new
   * table never needs the whole table in one buffer.
   */
  writes(zeros: Buffer): Array<{ offset: number; bytes: Buffer }> {
    const out: Array<{ offset: number; bytes: Buffer }> = [];
    for (let index = 0; index < this.pages.length; ) {
      const page = this.pages[index];
      const start = index << PAGE_SHIFT;
      if (page) {
        out.push({ offset: start, bytes: Buffer.from(page.subarray(0, Math.min(PAGE, this.length - start))) });
        index++;
        continue;
      }
      let end = start;
      while (index < this.pages.length && this.pages[index] === undefined && end - start + PAGE <= zeros.length) {
        end = Math.min((index + 1) << PAGE_SHIFT, this.length);
        index++;
      }
      if (end === start) throw new RangeError('PagedTable.writes: the zero buffer is smaller than a page');
      out.push({ offset: start, bytes: zeros.subarray(0, end - start) });
    }
    return out;
  }

  /** A new Buffer with the bytes of [start, end). */
  copy(start: number, end: number): Buffer {
    const out = Buffer.alloc(end - start);
    for (let pos = start; pos < end; ) {
      const index = pos >>> PAGE_SHIFT;
      const pageEnd = Math.min((index + 1) << PAGE_SHIFT, end);
      const page = this.pages[index];
      if (page) page.copy(out, pos - start, pos & PAGE_MASK, pageEnd - (index << PAGE_SHIFT));
      pos = pageEnd;
    }
    return out;
  }
}
