/**
 * Every chunk of every partition in one sorted list, for random access: where each chunk
 * starts on the disk, where its stored bytes lie in the file, and how they are coded. Kept in
 * typed arrays (about 40 bytes a chunk) so an image of a million chunks costs tens of MiB,
 * not hundreds; a lookup is a binary search.
 *
 * - Invariants (checked when built): the partitions tile [0, sectors) with no gap or overlap
 *   and agree with the koly's sector count; every stored range lies inside the data fork.
 * - A UDRW stub (no tables) is one raw chunk covering the data fork, then zeros.
 */
import { CorruptedImageError } from '../../block/errors.js';
import { CHUNK_KINDS, isCompressed, SECTOR, type ChunkKind } from './layout.js';
import type { DmgStructure } from './load.js';

export interface ChunkInfo {
  index: number;
  kind: ChunkKind;
  /** Byte range on the disk. */
  start: number;
  end: number;
  /** Stored bytes in the file. */
  position: number;
  length: number;
  /** The partition (plist index) and the entry in its table. */
  partition: number;
  entry: number;
}

const KIND_INDEX: ReadonlyMap<ChunkKind, number> = new Map(CHUNK_KINDS.map((k, i) => [k, i]));

export class ChunkTable {
  private constructor(
    /** Disk byte offset where chunk i starts; starts[count] is the disk size. */
    private readonly starts: Float64Array,
    private readonly positions: Float64Array,
    private readonly lengths: Float64Array,
    private readonly kinds: Uint8Array,
    private readonly partitions: Uint32Array,
    private readonly entries: Uint32Array,
  ) {}

  get count(): number {
    return this.kinds.length;
  }

  /** The disk size in bytes (sectors × 512). */
  get size(): number {
    return this.starts[this.count];
  }

  chunk(i: number): ChunkInfo {
    return {
      index: i,
      kind: CHUNK_KINDS[this.kinds[i]],
      start: this.starts[i],
      end: this.starts[i + 1],
      position: this.positions[i],
      length: this.lengths[i],
      partition: this.partitions[i],
      entry: this.entries[i],
    };
  }

  kindOf(i: number): ChunkKind {
    return CHUNK_KINDS[this.kinds[i]];
  }

  /** The chunk holding disk byte `offset` (0 <= offset < size). */
  indexAt(offset: number): number {
    let lo = 0;
    let hi = this.count - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.starts[mid] <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  static build(s: DmgStructure, path: string): ChunkTable {
    const { koly } = s;
    // At most two chunks for a stub; otherwise one per chunk of every table.
    const n = s.partitions.length === 0 ? 2 : s.partitions.reduce((sum, p) => sum + p.table.chunks.length, 0);
    const table = new ChunkTable(new Float64Array(n + 1), new Float64Array(n), new Float64Array(n), new Uint8Array(n), new Uint32Array(n), new Uint32Array(n));
    let used = 0;
    const add = (kind: ChunkKind, sector: number, position: number, length: number, partition: number, entry: number): void => {
      table.starts[used] = sector * SECTOR;
      table.positions[used] = position;
      table.lengths[used] = length;
      table.kinds[used] = KIND_INDEX.get(kind) ?? 0;
      table.partitions[used] = partition;
      table.entries[used] = entry;
      used++;
    };
    let sectors = 0;
    if (s.partitions.length === 0) {
      // A stub: the data fork is the disk (its last sector may be short; the rest reads as zeros).
      sectors = koly.sectorCount > 0 ? koly.sectorCount : Math.ceil(koly.dataForkLength / SECTOR);
      const stored = Math.min(koly.dataForkLength, sectors * SECTOR);
      if (stored > 0) add('raw', 0, koly.dataForkOffset, stored, 0, 0);
      if (Math.ceil(stored / SECTOR) < sectors) add('zero', Math.ceil(stored / SECTOR), 0, 0, 0, 0);
    } else {
      // Tables are laid out in ascending sector order; tolerate another plist order, not gaps.
      const ordered = [...s.partitions].sort((a, b) => a.table.firstSector - b.table.firstSector);
      for (const p of ordered) {
        const t = p.table;
        const where = `blkx ${p.index} "${p.name}"`;
        if (t.firstSector !== sectors) {
          throw new CorruptedImageError(path, `${where} starts at sector ${t.firstSector}, expected ${sectors} (partitions overlap or leave a gap)`);
        }
        for (const c of t.chunks) {
          const stored = c.kind === 'raw' || isCompressed(c.kind);
          if (stored && t.dataStart + c.offset + c.length > koly.dataForkLength) {
            throw new CorruptedImageError(path, `${where} entry ${c.entry} (${c.kind}) stores bytes at ${t.dataStart + c.offset}+${c.length}, past the ${koly.dataForkLength}-byte data fork`);
          }
          add(c.kind, t.firstSector + c.sector, stored ? koly.dataForkOffset + t.dataStart + c.offset : 0, stored ? c.length : 0, p.index, c.entry);
        }
        sectors += t.sectorCount;
      }
      if (koly.sectorCount !== 0 && koly.sectorCount !== sectors) {
        throw new CorruptedImageError(path, `the koly says ${koly.sectorCount} sectors but the blkx tables cover ${sectors}`);
      }
    }
    if (sectors === 0 || used === 0) throw new CorruptedImageError(path, 'the image has no sectors');
    table.starts[used] = sectors * SECTOR;
    return used === n ? table : table.prefix(used);
  }

  /** The first `n` chunks (a stub uses fewer rows than reserved). */
  private prefix(n: number): ChunkTable {
    return new ChunkTable(
      this.starts.slice(0, n + 1),
      this.positions.slice(0, n),
      this.lengths.slice(0, n),
      this.kinds.slice(0, n),
      this.partitions.slice(0, n),
      this.entries.slice(0, n),
    );
  }
}
