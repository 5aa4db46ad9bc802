/**
 * What the layers of an export hold, sector by sector, so tests can say in advance what
 * base:allocation, qemu:allocation-depth and qemu:dirty-bitmap:overlay must report. Written from
 * the documented rules (spec/asif.md, the design notes at the top of src/formats/asif/image.ts,
 * src/formats/raw.ts and src/stack/stack.ts), never from the server's code:
 *
 * - A RAW file is data where the file system holds blocks and zeros (holes) elsewhere, at the
 *   file system's block size (ext4: 4 KiB): a block that a write touched, even partly, is data.
 *   A RAW sector is never absent: a hole is the RAW layer saying "zeros" (its depth is the RAW
 *   layer's). RAW files are written here before they are served, never through a stack.
 * - An ASIF layer maps 512-byte sectors inside 1 MiB chunks. A chunk is never written (every
 *   sector `absent`), zero (status 10: every sector `zero`), or allocated (each sector `data`
 *   or, in a partly written chunk, `absent`).
 * - Writes mark whole sectors (a write that is not whole sectors read-modify-writes its edge
 *   sectors). In a layer (not a standalone image), a partial write to a zero chunk fills the
 *   whole chunk, so that no sector of it can show the layer below.
 * - Zeroing, per chunk piece: a zero chunk stays as it is; a whole chunk without NO_HOLE
 *   becomes a zero chunk; otherwise zeros are written as data. A never-written piece of a
 *   standalone image already reads as zeros and is left alone; in a layer it is zeroed like
 *   the others (it would show the layer below).
 * - Discard (TRIM) turns the allocated whole chunks inside the range into zero chunks; nothing
 *   else changes.
 * - A stack sends every change to its top layer, in whole sectors when layers lie below it:
 *   write-zeroes zeroes the whole sectors inside its range and writes zeros into the partial
 *   ones; a trim discards only the whole sectors inside its range. A read that falls through
 *   the cache layer fills the cache with the whole sectors it read from below that are data
 *   there; zeros below (RAW holes, zero chunks, sectors no layer holds) are not copied, so
 *   those sectors stay absent in the cache. (Data below whose bytes fill a whole chunk with
 *   zeros becomes a zero chunk of the cache: the layouts of these tests never read such a
 *   chunk as data, so the model leaves it out.)
 * - A read-only base of another format (qcow2, DMG, sparse bundle) says per range `data`,
 *   `zero` or `absent` (its own map, taken from an oracle or from its reader, which the format
 *   tests check); it is never written through a stack.
 * - Composition: the topmost layer whose sector is `data` or `zero` decides it (depth 1 = top);
 *   `absent` everywhere is depth 0 and reads as zeros. base:allocation is 0 for data and
 *   3 (HOLE|ZERO) for zero or absent everywhere.
 */
import type { ExpectedExtent } from './export-kinds.js';

export const SECTOR = 512;
export const CHUNK = 1024 * 1024;
const SECTORS_PER_CHUNK = CHUNK / SECTOR;

export const ABSENT = 0;
export const DATA = 1;
export const ZERO = 2;
export type SectorState = typeof ABSENT | typeof DATA | typeof ZERO;

/** A byte range of a file that holds data. */
export interface ByteRange {
  offset: number;
  length: number;
}

/** One image of an export: a RAW file (data blocks and holes), an ASIF layer of a stack, or a
 * standalone ASIF image. */
export class LayerModel {
  /** The sectors of every chunk that is not entirely absent (RAW: entirely a hole). */
  private readonly chunks = new Map<number, Uint8Array>();

  private constructor(
    readonly size: number,
    readonly kind: 'raw' | 'base' | 'layer' | 'standalone',
  ) {
    if (kind !== 'raw' && size % SECTOR !== 0) throw new Error(`an ASIF image of ${size} bytes is not whole sectors`);
  }

  /** A RAW file of `size` bytes holding `data` (written sparse): the file system blocks of
   * `fsBlock` bytes that the ranges touch are data, every other block is a hole (zero). */
  static raw(size: number, fsBlock: number, data: readonly ByteRange[]): LayerModel {
    if (fsBlock % SECTOR !== 0) throw new Error(`a file system block of ${fsBlock} bytes is not whole sectors`);
    const model = new LayerModel(size, 'raw');
    for (const r of data) {
      if (r.length <= 0) continue;
      const start = Math.floor(r.offset / fsBlock) * fsBlock;
      const end = Math.min(size, Math.ceil((r.offset + r.length) / fsBlock) * fsBlock);
      model.pieces(start, end - start, (c, from, to) => {
        let sectors = model.chunks.get(c);
        if (!sectors) {
          sectors = new Uint8Array(SECTORS_PER_CHUNK).fill(ZERO);
          model.chunks.set(c, sectors);
        }
        // The last sector of a file that is not whole sectors is partial: it counts whole.
        sectors.fill(DATA, (from - c * CHUNK) / SECTOR, Math.ceil((to - c * CHUNK) / SECTOR));
      });
    }
    return model;
  }

  /** A read-only base of another format whose own map is `runs` (whole sectors: a run that
   * ends inside a sector counts that sector whole, as for RAW). */
  static base(size: number, runs: ReadonlyArray<{ offset: number; length: number; state: 'data' | 'zero' | 'absent' }>): LayerModel {
    const model = new LayerModel(size, 'base');
    for (const r of runs) {
      if (r.length <= 0 || r.state === 'absent') continue;
      const state = r.state === 'data' ? DATA : ZERO;
      model.pieces(r.offset, Math.min(size, r.offset + r.length) - r.offset, (c, from, to) => {
        let sectors = model.chunks.get(c);
        if (!sectors) {
          sectors = new Uint8Array(SECTORS_PER_CHUNK);
          model.chunks.set(c, sectors);
        }
        sectors.fill(state, Math.floor((from - c * CHUNK) / SECTOR), Math.ceil((to - c * CHUNK) / SECTOR));
      });
    }
    return model;
  }

  /** A new, empty ASIF layer (overlay or cache) of a stack. */
  static layer(size: number): LayerModel {
    return new LayerModel(size, 'layer');
  }

  /** A new, empty standalone ASIF image. */
  static standalone(size: number): LayerModel {
    return new LayerModel(size, 'standalone');
  }

  /** A copy, e.g. to keep the state before a change. */
  clone(): LayerModel {
    const copy = new LayerModel(this.size, this.kind);
    for (const [c, sectors] of this.chunks) copy.chunks.set(c, Uint8Array.from(sectors));
    return copy;
  }

  get chunkCount(): number {
    return Math.ceil(this.size / CHUNK);
  }

  /** The sector states of chunk `c`, or the one state all its sectors share. */
  sectorsOf(c: number): { uniform: SectorState } | { sectors: Uint8Array } {
    const sectors = this.chunks.get(c);
    return sectors ? { sectors } : { uniform: this.kind === 'raw' ? ZERO : ABSENT };
  }

  stateAt(sector: number): SectorState {
    const s = this.sectorsOf(Math.floor(sector / SECTORS_PER_CHUNK));
    return 'uniform' in s ? s.uniform : (s.sectors[sector % SECTORS_PER_CHUNK] as SectorState);
  }

  /** Chunk `c` of an ASIF image: never written, a zero chunk (status 10), or allocated (01 or 11). */
  chunkStatus(c: number): 'never' | 'zero' | 'allocated' {
    this.assertWritable();
    const sectors = this.chunks.get(c);
    if (!sectors) return 'never';
    return sectors[0] === ZERO ? 'zero' : 'allocated';
  }

  private sectorsIn(c: number): number {
    return Math.min(SECTORS_PER_CHUNK, Math.ceil((this.size - c * CHUNK) / SECTOR));
  }

  private chunk(c: number): Uint8Array {
    let sectors = this.chunks.get(c);
    if (!sectors) {
      sectors = new Uint8Array(SECTORS_PER_CHUNK);
      this.chunks.set(c, sectors);
    }
    return sectors;
  }

  private assertWritable(): void {
    if (this.kind === 'raw' || this.kind === 'base') throw new Error(`a ${this.kind === 'raw' ? 'RAW file' : 'read-only base'} is written before it is served, never through the model`);
  }

  /** Calls `visit` for each chunk piece of [offset, offset + length). */
  private pieces(offset: number, length: number, visit: (c: number, from: number, to: number, whole: boolean) => void): void {
    const end = offset + length;
    for (let pos = offset; pos < end; ) {
      const c = Math.floor(pos / CHUNK);
      const to = Math.min(end, (c + 1) * CHUNK);
      visit(c, pos, to, pos === c * CHUNK && to === (c + 1) * CHUNK);
      pos = to;
    }
  }

  /** A write of [offset, offset + length) (whole sectors are marked; edges read-modify-written). */
  write(offset: number, length: number): void {
    this.assertWritable();
    if (length <= 0) return;
    const start = Math.floor(offset / SECTOR) * SECTOR;
    const end = Math.ceil((offset + length) / SECTOR) * SECTOR;
    this.pieces(start, end - start, (c, from, to, whole) => {
      const sectors = this.chunk(c);
      if (sectors[0] === ZERO) {
        // A zero chunk gets a new chunk: filled with zeros in a layer, an empty bitmap otherwise.
        sectors.fill(this.kind === 'layer' && !whole ? DATA : ABSENT);
      }
      sectors.fill(DATA, (from - c * CHUNK) / SECTOR, (to - c * CHUNK) / SECTOR);
    });
  }

  /** WRITE_ZEROES handed to this image. */
  zero(offset: number, length: number, noHole: boolean): void {
    this.assertWritable();
    this.pieces(offset, length, (c, from, to, whole) => {
      const status = this.chunkStatus(c);
      if (status === 'zero') return;
      if (status === 'never') {
        // Nothing to keep allocated: a layer marks a whole never-written chunk zero even with
        // NO_HOLE (tests do not rely on this); a standalone image leaves it, it reads as zeros.
        if (this.kind === 'standalone') return;
        if (whole) this.chunk(c).fill(ZERO);
        else this.write(from, to - from);
        return;
      }
      if (whole && !noHole) this.chunk(c).fill(ZERO);
      else this.write(from, to - from);
    });
  }

  /** TRIM handed to this image; returns the chunks it turned into zero chunks. */
  discard(offset: number, length: number): number[] {
    this.assertWritable();
    const released: number[] = [];
    for (let c = Math.ceil(offset / CHUNK); (c + 1) * CHUNK <= offset + length; c++) {
      if (this.chunkStatus(c) === 'allocated') {
        this.chunk(c).fill(ZERO);
        released.push(c);
      }
    }
    return released;
  }

  /** The runs of this image's own map. */
  runs(): Array<{ offset: number; length: number; state: SectorState }> {
    const out: Array<{ offset: number; length: number; state: SectorState }> = [];
    const push = (offset: number, length: number, state: SectorState): void => {
      const last = out[out.length - 1];
      if (last && last.state === state && last.offset + last.length === offset) last.length += length;
      else out.push({ offset, length, state });
    };
    for (let c = 0; c < this.chunkCount; c++) {
      const s = this.sectorsOf(c);
      const n = this.sectorsIn(c);
      if ('uniform' in s) push(c * CHUNK, Math.min(CHUNK, this.size - c * CHUNK), s.uniform);
      else for (let i = 0; i < n; i++) push(c * CHUNK + i * SECTOR, Math.min(SECTOR, this.size - c * CHUNK - i * SECTOR), s.sectors[i] as SectorState);
    }
    return out;
  }
}

/** A stack of layer models, bottom first, changed the way the server changes a stack. */
export class StackModel {
  /** `cacheIndex`: the position of the cache layer in `layers`, or -1. */
  constructor(
    readonly layers: LayerModel[],
    readonly cacheIndex = -1,
  ) {
    if (layers.length === 0) throw new Error('a stack needs a layer');
  }

  get top(): LayerModel {
    return this.layers[this.layers.length - 1];
  }

  get size(): number {
    return this.top.size;
  }

  private get layered(): boolean {
    return this.layers.length > 1;
  }

  write(offset: number, length: number): void {
    this.top.write(offset, length);
  }

  writeZeroes(offset: number, length: number, noHole: boolean): void {
    if (length <= 0) return;
    if (!this.layered) return this.top.zero(offset, length, noHole);
    const innerStart = Math.ceil(offset / SECTOR) * SECTOR;
    const innerEnd = Math.floor((offset + length) / SECTOR) * SECTOR;
    if (innerEnd <= innerStart) return this.top.write(offset, length);
    this.top.zero(innerStart, innerEnd - innerStart, noHole);
    if (offset < innerStart) this.top.write(offset, innerStart - offset);
    if (offset + length > innerEnd) this.top.write(innerEnd, offset + length - innerEnd);
  }

  /** Returns the byte ranges that now read as zeros (the top released them). */
  trim(offset: number, length: number): Array<[number, number]> {
    const start = this.layered ? Math.ceil(offset / SECTOR) * SECTOR : offset;
    const end = this.layered ? Math.floor((offset + length) / SECTOR) * SECTOR : offset + length;
    if (end <= start) return [];
    return this.top.discard(start, end - start).map((c) => [c * CHUNK, Math.min((c + 1) * CHUNK, this.size)]);
  }

  /** A read of [offset, offset + length) (or a CACHE request of at most 4 MiB): the whole sectors
   * that fall through to the cache layer and are data below it are written into it. */
  readThrough(offset: number, length: number): void {
    const cacheIndex = this.cacheIndex;
    if (cacheIndex < 0) return;
    const cache = this.layers[cacheIndex];
    const first = Math.ceil(offset / SECTOR);
    const last = Math.floor((offset + length) / SECTOR);
    let runStart = -1;
    for (let s = first; s <= last; s++) {
      let falls = s < last;
      for (let i = this.layers.length - 1; falls && i >= cacheIndex; i--) if (this.layers[i].stateAt(s) !== ABSENT) falls = false;
      if (falls) falls = this.stateBelow(cacheIndex, s) === DATA;
      if (falls && runStart < 0) runStart = s;
      if (!falls && runStart >= 0) {
        cache.write(runStart * SECTOR, (s - runStart) * SECTOR);
        runStart = -1;
      }
    }
  }

  /** The state of sector `s` as the layers below `level` show it (absent where none holds it). */
  private stateBelow(level: number, s: number): SectorState {
    for (let i = level - 1; i >= 0; i--) {
      const state = this.layers[i].stateAt(s);
      if (state !== ABSENT) return state;
    }
    return ABSENT;
  }

  /** Per sector, the depth that decides it and its state there. */
  private decide(c: number, visit: (i: number, depth: number, state: SectorState) => void, sectors: number): void {
    for (let i = 0; i < sectors; i++) {
      let depth = 0;
      let state: SectorState = ABSENT;
      for (let k = this.layers.length - 1; k >= 0; k--) {
        const s = this.layers[k].sectorsOf(c);
        const st = 'uniform' in s ? s.uniform : (s.sectors[i] as SectorState);
        if (st !== ABSENT) {
          depth = this.layers.length - k;
          state = st;
          break;
        }
      }
      visit(i, depth, state);
    }
  }

  /** What base:allocation and qemu:allocation-depth report for the whole disk, merged. */
  extents(): ExpectedExtent[] {
    const out: ExpectedExtent[] = [];
    const push = (offset: number, length: number, depth: number, state: SectorState): void => {
      const allocation = state === DATA ? 0 : 3;
      const last = out[out.length - 1];
      if (last && last.allocation === allocation && last.depth === depth && last.offset + last.length === offset) last.length += length;
      else out.push({ offset, length, allocation, depth });
    };
    const size = this.size;
    for (let c = 0; c * CHUNK < size; c++) {
      const chunkLength = Math.min(CHUNK, size - c * CHUNK);
      const uniform = this.layers.every((l) => 'uniform' in l.sectorsOf(c));
      const sectors = uniform ? 1 : Math.ceil(chunkLength / SECTOR);
      this.decide(
        c,
        (i, depth, state) => {
          const at = c * CHUNK + i * SECTOR;
          push(at, uniform ? chunkLength : Math.min(SECTOR, size - at), depth, state);
        },
        sectors,
      );
    }
    return out;
  }

  /** qemu:dirty-bitmap:overlay: 1 where the top layer holds the range (data or zero), else 0. */
  dirty(): Array<{ offset: number; length: number; type: number }> {
    const out: Array<{ offset: number; length: number; type: number }> = [];
    for (const r of this.top.runs()) {
      const type = r.state === ABSENT ? 0 : 1;
      const last = out[out.length - 1];
      if (last && last.type === type) last.length += r.length;
      else out.push({ offset: r.offset, length: r.length, type });
    }
    return out;
  }
}

/** A layer model rebuilt from the extents of a single-image export (depth 1 = the image). */
export function standaloneFromExtents(size: number, extents: readonly ExpectedExtent[]): LayerModel {
  const model = LayerModel.standalone(size);
  for (const e of extents) {
    if (e.depth === 0) continue;
    if (e.depth !== 1) throw new Error(`a single image has no depth ${e.depth}`);
    if (e.allocation === 0) model.write(e.offset, e.length);
    else {
      // Zero chunks: data first, then a whole-chunk zero turns them into status 10.
      model.write(e.offset, e.length);
      model.zero(e.offset, e.length, false);
    }
  }
  return model;
}

/** Adjacent runs of equal `type` merged. */
export function mergeRuns<T extends { offset: number; length: number; type: number }>(runs: readonly T[]): Array<{ offset: number; length: number; type: number }> {
  const out: Array<{ offset: number; length: number; type: number }> = [];
  for (const r of runs) {
    const last = out[out.length - 1];
    if (last && last.type === r.type && last.offset + last.length === r.offset) last.length += r.length;
    else out.push({ offset: r.offset, length: r.length, type: r.type });
  }
  return out;
}

/** The runs a metadata context reports for `extents`: base:allocation flags or depths. */
export function contextRuns(extents: readonly ExpectedExtent[], field: 'allocation' | 'depth'): Array<{ offset: number; length: number; type: number }> {
  return mergeRuns(extents.map((e) => ({ offset: e.offset, length: e.length, type: e[field] })));
}
