/**
 * An open ASIF image: the Layer contract on top of the map store (map-store.ts).
 *
 * - Stores: the header bytes (patched for a new layer UUID or sector count), the metadata read
 *   at open, the map store, the chunk allocator, and the chunks being allocated right now.
 * - States of a logical chunk, as this layer reports them (spec §7, §10): 00 → `absent`;
 *   10 → `zero`; 01 → `data`; 11 → per sector, written → `data`, otherwise `absent`.
 *   In a standalone image (no layer type) `absent` reads as zeros like everything else.
 * - Invariants:
 *   - the in-memory map changes only after the data it references was written (so a flush,
 *     which syncs data before writing the map, never publishes a reference to unwritten data);
 *   - concurrent writes to one unallocated chunk share one newly allocated chunk;
 *   - a chunk entering status 11 starts from an empty bitmap slice; one whose every sector is
 *     written becomes 01 at once;
 *   - in a layer, a discarded chunk hides the layer below, so a partial write to it first fills
 *     the new chunk with zeros (it becomes 01) instead of letting unwritten sectors fall through;
 *   - the first change to a non-cache image opened read-write gives it a new layer UUID,
 *     written and synced before that change's data; a read-only image is never written;
 *   - memory stays bounded: the tables (1 MiB per 126 GiB of address space that was ever
 *     written) plus the bitmap cache's budgets; writers wait for a flush when changed slices
 *     exceed theirs.
 * Requests may run concurrently (the caller orders only overlapping writes); `truncate` and
 * `close` expect no other request in flight.
 */
import { isDeepStrictEqual } from 'node:util';
import { v4 as uuidV4 } from 'uuid';
import { InvalidBlockCountError, RequestError } from '../../block/errors.js';
import { pushRun, type Run, type RunState } from '../../block/runs.js';
import type { BlockFile } from '../../io/block-file.js';
import type { Layer, LayerType, ParentPin, WriteOptions, ZeroOptions } from '../layer.js';
import type { ChunkAllocator } from './allocator.js';
import { isSectorWritten, isSliceFull, markSectorsWritten } from './bitmap.js';
import { headerGuid, headerParentUUID, uuidToBytes, withGuid, withParentUUID, withSectorCount } from './header.js';
import { ChunkClock } from './chunk-clock.js';
import { ChunkStatus, maxBlockCount } from './layout.js';
import type { LoadedMap } from './load.js';
import { MapStore } from './map-store.js';
import { decodeMetadata, encodeMetadata, type AsifMetadata } from './metadata.js';
import { throwingSink } from './problems.js';

export interface AsifOpenOptions {
  readOnly?: boolean;
  /** Read-only: refuse an image that another program has open for writing (see io/image-lock.ts). */
  requireLock?: boolean;
  /**
   * Never rotate the layer UUID, because the writes will not change what the image reads as
   * in its stack (rebase copies into an overlay exactly what its old base showed there).
   */
  keepLayerUUID?: boolean;
  /**
   * For a cache layer: the most bytes of data to keep, instead of the limit the image records
   * (least recently used chunks are given up beyond it).
   */
  cacheLimit?: number;
  /** Memory for clean bitmap slices (default 4 MiB). */
  bitmapCacheBytes?: number;
  /** Memory for changed slices; writers wait for a flush beyond it (default 8 MiB). */
  dirtyBitmapBytes?: number;
}

/** A run of this layer with where its bytes lie in the file (null unless `data`). */
export interface MappedRun extends Run {
  fileOffset: number | null;
}

/** A chunk allocated for writes that have not all finished. */
interface Provisional {
  readonly chunk: number;
  /** Writes still using it. */
  users: number;
  /** The map references it. */
  attached: boolean;
  /** Every sector holds data once the writes land (whole-chunk write, or zero-filled first). */
  readonly full: boolean;
  /** Resolves when the chunk is ready for the writes (after a zero fill when one is needed). */
  readonly ready: Promise<void>;
}

const DEFAULT_CACHE_BYTES = 4 * 1024 * 1024;
const DEFAULT_DIRTY_BYTES = 8 * 1024 * 1024;
/** What one cached slice costs beyond its bytes (map entries, slack). */
const SLICE_OVERHEAD = 64;
/** Zeroing jobs of one request kept in flight. */
const ZERO_CONCURRENCY = 16;

type ZeroAction = 'hole' | 'write';

export class AsifImage implements Layer {
  readonly format = 'asif' as const;
  readonly blockSize: number;
  readonly chunkSize: number;
  readonly stableUUID: string;
  readonly layerType: LayerType | null;
  private readonly store: MapStore;
  private metadata: AsifMetadata;
  /** A bounded cache layer's clock of data chunks (chunk-clock.ts); null when unbounded. */
  private readonly clock: ChunkClock | null;
  private readonly cacheLimitBytes: number | null;
  private evicting: Promise<void> | null = null;
  private readonly provisional = new Map<number, Provisional>();
  private readonly maxBlocks: number;
  private readonly metadataChunk: number;
  private readonly dirtyLimit: number;
  private header: Buffer;
  private sectorCount: number;
  private uuid: string;
  private rotation: Promise<void> | null = null;
  private rotated = false;
  private closed = false;
  private zeroChunk: Buffer | undefined;

  constructor(
    private readonly file: BlockFile,
    loaded: LoadedMap,
    metadata: AsifMetadata,
    private readonly allocator: ChunkAllocator,
    options: AsifOpenOptions = {},
  ) {
    const geo = loaded.geometry;
    this.blockSize = geo.blockSize;
    this.chunkSize = geo.chunkSize;
    this.header = loaded.header.bytes;
    this.sectorCount = loaded.header.sectorCount;
    this.uuid = headerGuid(this.header);
    this.stableUUID = metadata.stableUUID;
    this.layerType = metadata.layerType;
    this.metadata = metadata;
    this.rotated = options.keepLayerUUID ?? false;
    this.maxBlocks = maxBlockCount(geo, loaded.header.metadataChunk);
    this.metadataChunk = loaded.header.metadataChunk;
    const perSlice = geo.sliceBytes + SLICE_OVERHEAD;
    this.dirtyLimit = Math.max(1, Math.floor((options.dirtyBitmapBytes ?? DEFAULT_DIRTY_BYTES) / perSlice));
    this.store = new MapStore(file, loaded, allocator, loaded.header.metadataChunk, {
      cacheSlices: Math.max(1, Math.floor((options.bitmapCacheBytes ?? DEFAULT_CACHE_BYTES) / perSlice)),
    });
    this.cacheLimitBytes = this.layerType === 'cache' ? (options.cacheLimit ?? metadata.cacheLimit) : null;
    this.clock = this.cacheLimitBytes !== null && !file.readOnly ? new ChunkClock() : null;
    if (this.clock) {
      // Rebuilt from the map: file order stands for the order the chunks were filled in.
      const clock = this.clock;
      this.store.forEachDataChunk((logical, physical) => clock.assign(physical, logical));
      clock.resetUse();
    }
  }

  get path(): string {
    return this.file.path;
  }

  get readOnly(): boolean {
    return this.file.readOnly;
  }

  get size(): number {
    return this.sectorCount * this.blockSize;
  }

  get blockCount(): number {
    return this.sectorCount;
  }

  /** Writes and zeroes come in whole sectors; the stack pads the others. */
  get requestAlignment(): number {
    return this.blockSize;
  }

  get layerUUID(): string {
    return this.uuid;
  }

  get parentUUID(): string | null {
    return headerParentUUID(this.header);
  }

  /** What this layer recorded of a RAW, foreign or remote parent (null over ASIF, or when made by another tool). */
  get parentPin(): ParentPin | null {
    return this.metadata.parentPin;
  }

  /**
   * Records a new parent (rebase): the UUID of an ASIF parent in the header, or the pin of any
   * other parent in the metadata. The metadata goes to a new chunk that replaces the old one
   * in the map only once it is on disk, so a crash leaves the old or the new record, never a
   * torn one. Written and synced before this resolves; the layer UUID does not change.
   */
  async recordParent(parentUUID: string | null, parentPin: ParentPin | null): Promise<void> {
    this.checkWritable();
    const parentBytes = parentUUID === null ? null : uuidToBytes(parentUUID);
    if (parentUUID !== null && !parentBytes) throw new RequestError('EINVAL', `parent UUID ${JSON.stringify(parentUUID)} is not a UUID`);
    await this.tracked(async () => {
      if (!isDeepStrictEqual(parentPin, this.metadata.parentPin)) await this.rewriteMetadata({ ...this.metadata, parentPin });
      if (parentUUID !== this.parentUUID) {
        const next = withParentUUID(this.header, parentBytes);
        await this.file.write(next, 0);
        await this.store.sync();
        this.header = next;
      }
    });
  }

  private async rewriteMetadata(meta: AsifMetadata): Promise<void> {
    const C = this.chunkSize;
    const logical = this.metadataChunk;
    const encoded = encodeMetadata({ stableUUID: meta.stableUUID, layerType: meta.layerType, parentPin: meta.parentPin, cacheLimit: meta.cacheLimit, keep: meta.plist });
    if (encoded.length > C) throw new RequestError('EINVAL', `${this.path}: the metadata would not fit in one chunk`);
    const chunk = this.allocator.allocate();
    const whole = Buffer.alloc(C);
    encoded.copy(whole);
    try {
      await this.file.write(whole, chunk * C);
    } catch (err) {
      this.allocator.release(chunk);
      throw err;
    }
    const status = this.store.status(logical);
    if (status === ChunkStatus.full || status === ChunkStatus.partial) {
      this.allocator.retire(this.store.chunk(logical));
      this.store.dropSlice(logical);
    }
    this.store.setEntry(logical, ChunkStatus.full, chunk);
    await this.store.flush();
    const reread = decodeMetadata(encoded, 'metadata', throwingSink(this.path));
    if (reread) this.metadata = reread;
  }

  /** Children of an ASIF layer record its layer UUID, not a pin. */
  pin(): Promise<null> {
    return Promise.resolve(null);
  }

  /** Bytes of the data chunks the map references (the metadata chunk left out). */
  allocatedBytes(): number {
    return this.store.dataChunkCount * this.chunkSize;
  }

  fileSize(): Promise<number> {
    return this.file.size();
  }

  /**
   * With `maxRuns`, the walk stops once that many runs are complete: a client asking for one
   * extent (REQ_ONE) makes the image look at the chunks of that extent only, never load the
   * bitmaps of a whole disk of partly written chunks.
   */
  async map(offset: number, length: number, maxRuns?: number): Promise<Run[]> {
    const runs: Run[] = [];
    for (const r of await this.fileMap(offset, length, maxRuns)) pushRun(runs, r.offset, r.length, r.state);
    return runs;
  }

  /** Like `map`, with the file offset of every data run (runs split where the file is not contiguous). */
  async fileMap(offset: number, length: number, maxRuns?: number): Promise<MappedRun[]> {
    this.checkRange(offset, length);
    return this.tracked(async () => this.resolve(offset, length, maxRuns));
  }

  async read(buf: Buffer, offset: number): Promise<void> {
    this.checkRange(offset, buf.length);
    await this.tracked(() => this.readInto(buf, offset));
  }

  async write(buf: Buffer, offset: number, options?: WriteOptions): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, buf.length);
    this.checkAligned(offset, buf.length);
    if (buf.length > 0) {
      // The common case costs no more than the file write: no closures, no extra awaits.
      const id = this.allocator.beginRequest();
      try {
        if (!this.rotated && this.layerType !== 'cache') await this.beforeChange();
        await this.writeSectors(buf, offset);
      } finally {
        this.allocator.endRequest(id);
      }
    }
    if (options?.fua || this.store.bitmaps.pinnedCount > this.dirtyLimit) await this.afterChange(options);
    if (this.clock) await this.keepWithinLimit();
  }

  /**
   * Reads what this layer holds of [offset, offset + buf.length) and says what it holds, with
   * one lookup: data runs are read into `buf`, zero runs filled with zeros, absent runs left
   * as they were (for the caller to fill from below). A chunk given up meanwhile (a bounded
   * cache) is still read whole: its file space is not reused while this request runs.
   */
  async readRuns(buf: Buffer, offset: number): Promise<Run[]> {
    this.checkRange(offset, buf.length);
    const id = this.allocator.beginRequest();
    try {
      const resolved = this.resolve(offset, buf.length);
      const mapped = Array.isArray(resolved) ? resolved : await resolved;
      if (mapped.length === 1) {
        // One run (most small reads): no list of reads to gather.
        const r = mapped[0];
        if (r.fileOffset !== null) await this.file.read(buf, r.fileOffset);
        else if (r.state === 'zero') buf.fill(0);
        return [{ offset: r.offset, length: r.length, state: r.state }];
      }
      const reads: Promise<void>[] = [];
      const runs: Run[] = [];
      for (const r of mapped) {
        const at = r.offset - offset;
        if (r.fileOffset !== null) reads.push(this.file.read(buf.subarray(at, at + r.length), r.fileOffset));
        else if (r.state === 'zero') buf.fill(0, at, at + r.length);
        pushRun(runs, r.offset, r.length, r.state);
      }
      await Promise.all(reads);
      return runs;
    } finally {
      this.allocator.endRequest(id);
    }
  }

  /** The most bytes of data this cache layer keeps; null when unbounded (or not a cache). */
  get cacheLimit(): number | null {
    return this.cacheLimitBytes;
  }

  /**
   * Gives up the least recently used chunks of a bounded cache layer until its data is 90% of
   * the limit: each becomes 00 (reads fall through to the layer below again), the change is
   * flushed, and the chunks are punched out of the file once no request can see them.
   */
  private async keepWithinLimit(): Promise<void> {
    const limit = this.cacheLimitBytes ?? Infinity;
    while (this.store.dataChunkCount * this.chunkSize > limit) {
      // One eviction at a time; a write that finished meanwhile looks again once it is done.
      if (this.evicting) {
        await this.evicting;
        continue;
      }
      const run = this.evict();
      this.evicting = run.then(() => undefined).finally(() => {
        this.evicting = null;
      });
      // Every chunk left is being written: the next write to finish evicts again.
      if ((await run) === 0) return;
    }
  }

  /** Gives chunks up down to 90% of the limit; resolves with how many it gave up. */
  private async evict(): Promise<number> {
    const clock = this.clock;
    const limit = this.cacheLimitBytes;
    if (!clock || limit === null) return 0;
    const C = this.chunkSize;
    const keep = Math.max(1, Math.floor((limit * 0.9) / C));
    let given = 0;
    while (this.store.dataChunkCount > keep) {
      const victim = clock.victim((l) => this.provisional.has(l));
      if (!victim) break;
      const status = this.store.status(victim.logical);
      clock.unassign(victim.physical);
      // The clock may know an older owner: only a chunk the map still gives that logical chunk goes.
      if ((status !== ChunkStatus.full && status !== ChunkStatus.partial) || this.store.chunk(victim.logical) !== victim.physical) continue;
      this.allocator.retire(victim.physical, true);
      this.store.dropSlice(victim.logical);
      this.store.setEntry(victim.logical, ChunkStatus.neverWritten, 0);
      given++;
    }
    if (given === 0) return 0;
    await this.store.flush();
    await this.punchGivenUp();
    return given;
  }

  /** Punches the chunks eviction gave up out of the file, then lets them be reused. */
  private async punchGivenUp(): Promise<void> {
    const C = this.chunkSize;
    for (const chunk of this.allocator.takePunchable()) {
      try {
        await this.file.punchHole?.(chunk * C, C);
      } finally {
        this.allocator.release(chunk);
      }
    }
  }

  async zero(offset: number, length: number, options?: ZeroOptions): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, length);
    this.checkAligned(offset, length);
    const noHole = options?.noHole ?? false;
    if (options?.fast) {
      let writes = false;
      this.planZero(offset, length, noHole, (action) => {
        if (action === 'write') writes = true;
      });
      if (writes) throw new RequestError('ENOTSUP', 'zeroing this range needs data writes, not only a map change');
    }
    if (length > 0) {
      await this.tracked(async () => {
        await this.beforeChange();
        await this.zeroRange(offset, length, noHole);
      });
    }
    await this.afterChange(options);
  }

  async discard(offset: number, length: number, options?: WriteOptions): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, length);
    if (length === 0) return this.afterChange(options);
    await this.tracked(async () => {
      await this.beforeChange();
      // Whole allocated chunks are released (they read as zeros, never as the layer below);
      // the rest of the range keeps its data: a discard is a hint.
      const C = this.chunkSize;
      for (let l = Math.ceil(offset / C); (l + 1) * C <= offset + length; l++) {
        const status = this.store.status(l);
        if (status === ChunkStatus.full || status === ChunkStatus.partial) this.makeHole(l);
      }
    });
    await this.afterChange(options);
  }

  async flush(): Promise<void> {
    if (this.readOnly) return;
    await this.store.flush();
    if (this.clock) await this.punchGivenUp();
  }

  /**
   * Changes the sector count, durably. Shrinking first zeroes everything past the new end (whole
   * chunks become 10, the rest of the last chunk is written with zeros), so that growing again
   * reads zeros there, never old data or the layer below.
   */
  async truncate(size: number): Promise<void> {
    this.checkWritable();
    if (this.layerType === 'cache') throw new RequestError('EPERM', `${this.path}: a cache layer cannot be truncated`);
    const bs = this.blockSize;
    if (!Number.isSafeInteger(size) || size <= 0 || size % bs !== 0 || size / bs > this.maxBlocks) {
      throw new InvalidBlockCountError(
        this.path,
        `size ${size} is not a whole number of ${bs}-byte blocks between 1 and ${this.maxBlocks} blocks`,
      );
    }
    await this.tracked(async () => {
      await this.beforeChange();
      const old = this.size;
      if (size < old) {
        this.sectorCount = size / bs;
        await this.zeroRange(size, old - size, false);
      }
      await this.store.flush();
      const next = withSectorCount(this.header, size / bs);
      await this.file.write(next, 0);
      await this.store.sync();
      this.header = next;
      this.sectorCount = size / bs;
    });
  }

  /**
   * The bitmap cache: clean slices (at most `capacity`), pinned ones (changed and not yet
   * flushed; writers wait beyond `dirtyLimit`), and `slots`, the most slices it ever held.
   */
  bitmapCacheStats(): { clean: number; pinned: number; capacity: number; dirtyLimit: number; slots: number } {
    const b = this.store.bitmaps;
    return { clean: b.cleanCount, pinned: b.pinnedCount, capacity: b.capacity, dirtyLimit: this.dirtyLimit, slots: b.slotCount };
  }

  /**
   * Chunks this image knows are free (released by zero, discard or truncate, or leaked by a
   * crash and found at open). ASIF keeps no free list on disk, so once the image is closed
   * `check` reports them as leaked; the next read-write open reuses them.
   */
  freeChunks(): number[] {
    return this.allocator.freeChunks();
  }

  /** Flushes, gives back free chunks at the end of the file, and closes it. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (!this.readOnly) {
        await this.store.flush();
        if (this.clock) await this.punchGivenUp();
        const end = this.allocator.trimTail() * this.chunkSize;
        if (end < (await this.file.size())) await this.file.truncate(end);
      }
    } finally {
      await this.file.close();
    }
  }

  // ---- reading ---------------------------------------------------------------------------

  private async readInto(buf: Buffer, offset: number): Promise<void> {
    const runs = await this.resolve(offset, buf.length);
    const reads: Promise<void>[] = [];
    for (const r of runs) {
      const at = r.offset - offset;
      if (r.fileOffset === null) buf.fill(0, at, at + r.length);
      else reads.push(this.file.read(buf.subarray(at, at + r.length), r.fileOffset));
    }
    await Promise.all(reads);
  }

  /**
   * This layer's runs over [offset, offset + length), merged where state and file position
   * continue. With `maxRuns`, it stops once more than that many runs of distinct states have
   * begun and returns the complete ones: a prefix of the range. Synchronous (no promise at all)
   * unless a partly written chunk's bitmap slice must be read from disk.
   */
  private resolve(offset: number, length: number, maxRuns = Infinity): MappedRun[] | Promise<MappedRun[]> {
    const walk: MapWalk = { runs: [], pos: offset, end: offset + length, maxRuns, states: { counted: 0, distinct: 0, last: '' } };
    const need = this.walkMap(walk);
    return need ? this.finishWalk(walk, need) : walk.runs;
  }

  /** Loads each missing bitmap slice the walk stopped at, and walks on. */
  private async finishWalk(walk: MapWalk, first: SliceNeeded): Promise<MappedRun[]> {
    for (let need: SliceNeeded | null = first; need; need = this.walkMap(walk)) {
      const { logical, chunk, length, filePos } = need;
      const pos = walk.pos;
      // The chunk may change while its bitmap is read: then the walk looks at the map again.
      const pushed = await this.store.withSlice(logical, chunk, false, (slice) => {
        this.pushSectors(walk.runs, pos, length, filePos, slice);
        return true;
      });
      if (pushed) walk.pos += length;
    }
    return walk.runs;
  }

  /**
   * Walks the map from `walk.pos` as far as memory allows; returns the piece whose bitmap
   * slice must be read first, or null when the walk is done (`walk.runs` then holds the answer).
   */
  private walkMap(walk: MapWalk): SliceNeeded | null {
    const C = this.chunkSize;
    const { runs, end } = walk;
    while (walk.pos < end) {
      if (walk.maxRuns < Infinity) {
        const cut = stateBoundary(runs, walk.states, walk.maxRuns);
        if (cut >= 0) {
          runs.length = cut;
          return null;
        }
      }
      const pos = walk.pos;
      const l = Math.floor(pos / C);
      if (!this.store.hasTable(l)) {
        // No table: every chunk up to the table's end is 00.
        const tableEnd = Math.ceil((l + 1) / this.store.geo.chunksPerTable) * this.store.geo.tableSpan;
        const n = Math.min(tableEnd, end) - pos;
        pushMapped(runs, pos, n, 'absent', null);
        walk.pos += n;
        continue;
      }
      const within = pos - l * C;
      const n = Math.min(C - within, end - pos);
      const status = this.store.status(l);
      if (status === ChunkStatus.partial) {
        const chunk = this.store.chunk(l);
        this.clock?.touch(chunk);
        const cached = this.store.bitmaps.view(l);
        if (!cached) return { logical: l, chunk, length: n, filePos: chunk * C + within };
        this.pushSectors(runs, pos, n, chunk * C + within, cached);
      } else if (status === ChunkStatus.full) {
        const chunk = this.store.chunk(l);
        this.clock?.touch(chunk);
        pushMapped(runs, pos, n, 'data', chunk * C + within);
      } else {
        pushMapped(runs, pos, n, status === ChunkStatus.discarded ? 'zero' : 'absent', null);
      }
      walk.pos += n;
    }
    return null;
  }

  /** Runs of a status-11 chunk piece starting at device byte `pos`, file byte `filePos`. */
  private pushSectors(runs: MappedRun[], pos: number, length: number, filePos: number, slice: Uint8Array): void {
    const bs = this.blockSize;
    const within = filePos % this.chunkSize;
    let at = 0;
    while (at < length) {
      const sector = Math.floor((within + at) / bs);
      const n = Math.min((sector + 1) * bs - (within + at), length - at);
      if (isSectorWritten(slice, sector)) pushMapped(runs, pos + at, n, 'data', filePos + at);
      else pushMapped(runs, pos + at, n, 'absent', null);
      at += n;
    }
  }

  // ---- writing ---------------------------------------------------------------------------

  /** Writes a sector-aligned range, chunk by chunk, concurrently. */
  private writeSectors(buf: Buffer, offset: number): Promise<void> {
    const C = this.chunkSize;
    const l = Math.floor(offset / C);
    // Inside one chunk (every small write): no list of jobs to settle.
    if (offset + buf.length <= (l + 1) * C) return this.writePiece(l, offset - l * C, buf);
    const jobs: Promise<void>[] = [];
    for (let pos = offset; pos < offset + buf.length; ) {
      const k = Math.floor(pos / C);
      const within = pos - k * C;
      const n = Math.min(C - within, offset + buf.length - pos);
      jobs.push(this.writePiece(k, within, buf.subarray(pos - offset, pos - offset + n)));
      pos += n;
    }
    return settleAll(jobs);
  }

  /** Writes whole sectors inside logical chunk L, allocating the chunk when it has none. */
  private async writePiece(l: number, within: number, data: Buffer): Promise<void> {
    const C = this.chunkSize;
    const status = this.store.status(l);
    if (status === ChunkStatus.full) return this.file.write(data, this.store.chunk(l) * C + within);
    if (status === ChunkStatus.partial) {
      const chunk = this.store.chunk(l);
      await this.file.write(data, chunk * C + within);
      return this.markWritten(l, chunk, within, data.length);
    }
    let p = this.provisional.get(l);
    if (!p) {
      const chunk = this.allocator.allocate();
      const whole = within === 0 && data.length === C;
      const fill = !whole && this.layerType !== null && status === ChunkStatus.discarded;
      p = {
        chunk,
        users: 0,
        attached: false,
        full: whole || fill,
        ready: fill ? this.file.write(this.zeros(), chunk * C) : Promise.resolve(),
      };
      this.provisional.set(l, p);
    }
    p.users++;
    try {
      await p.ready;
      await this.file.write(data, p.chunk * C + within);
      this.attach(l, p);
      if (!p.full) await this.markWritten(l, p.chunk, within, data.length);
    } finally {
      if (--p.users === 0) {
        this.provisional.delete(l);
        if (!p.attached) this.allocator.release(p.chunk);
      }
    }
  }

  /** Points L's entry at a newly allocated chunk once the first write to it has landed. */
  private attach(l: number, p: Provisional): void {
    const status = this.store.status(l);
    if (status === ChunkStatus.neverWritten || status === ChunkStatus.discarded) {
      if (p.full) {
        this.store.setEntry(l, ChunkStatus.full, p.chunk);
      } else {
        this.store.setEntry(l, ChunkStatus.partial, p.chunk);
        this.store.ensureBitmapChunk(l);
        this.store.installSlice(l);
      }
      p.attached = true;
      this.clock?.assign(p.chunk, l);
    } else if (this.store.chunk(l) !== p.chunk) {
      throw new Error(`${this.path}: logical chunk ${l} changed chunk while a write to it was running`);
    }
  }

  /** Records sectors of a status-11 chunk as written (after their data was written). */
  private async markWritten(l: number, chunk: number, within: number, length: number): Promise<void> {
    const bs = this.blockSize;
    await this.store.withSlice(l, chunk, true, (slice) => {
      markSectorsWritten(slice, within / bs, length / bs);
      if (isSliceFull(slice)) {
        this.store.setEntry(l, ChunkStatus.full, chunk);
        this.store.dropSlice(l);
      }
    });
  }

  // ---- zeroing -----------------------------------------------------------------------------

  /**
   * What zeroing each chunk piece of a range takes, without changing anything: `hole` (a map
   * change: status 10) or `write` (zeros written as data). Pieces that already read as zeros
   * from this layer alone are skipped (10 always; 00 unless the image is a layer, where 00
   * would show the layer below).
   */
  private planZero(offset: number, length: number, noHole: boolean, visit: (action: ZeroAction, l: number, within: number, n: number) => void): void {
    const C = this.chunkSize;
    const geo = this.store.geo;
    const layered = this.layerType !== null;
    const end = offset + length;
    for (let pos = offset; pos < end; ) {
      const l = Math.floor(pos / C);
      if (!layered && !this.store.hasTable(l)) {
        pos = Math.min(end, Math.ceil((l + 1) / geo.chunksPerTable) * geo.tableSpan);
        continue;
      }
      const within = pos - l * C;
      const n = Math.min(C - within, end - pos);
      const whole = n === C;
      const status = this.store.status(l);
      pos += n;
      if (status === ChunkStatus.discarded) continue;
      if (status === ChunkStatus.neverWritten) {
        if (layered) visit(whole ? 'hole' : 'write', l, within, n);
        continue;
      }
      visit(whole && !noHole ? 'hole' : 'write', l, within, n);
    }
  }

  private async zeroRange(offset: number, length: number, noHole: boolean): Promise<void> {
    const C = this.chunkSize;
    const inFlight = new Set<Promise<void>>();
    const errors: unknown[] = [];
    const pending: Array<[number, number]> = [];
    this.planZero(offset, length, noHole, (action, l, within, n) => {
      if (action === 'hole') this.makeHole(l);
      else pending.push([l * C + within, n]);
    });
    for (const [at, n] of pending) {
      const job: Promise<void> = this.writeSectors(this.zeros().subarray(0, n), at)
        .catch((err: unknown) => {
          errors.push(err);
        })
        .finally(() => inFlight.delete(job));
      inFlight.add(job);
      if (inFlight.size >= ZERO_CONCURRENCY) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    if (errors.length > 0) throw errors[0];
  }

  /** Status 10 for logical chunk L; its chunk, if any, is retired. */
  private makeHole(l: number): void {
    const status = this.store.status(l);
    if (status === ChunkStatus.full || status === ChunkStatus.partial) {
      this.clock?.unassign(this.store.chunk(l));
      this.allocator.retire(this.store.chunk(l));
      this.store.dropSlice(l);
    }
    this.store.setEntry(l, ChunkStatus.discarded, 0);
  }

  private zeros(): Buffer {
    return (this.zeroChunk ??= Buffer.alloc(this.chunkSize));
  }

  // ---- bookkeeping -------------------------------------------------------------------------

  /** Runs a request while the allocator knows it is in flight (see allocator.ts). */
  private async tracked<T>(work: () => Promise<T>): Promise<T> {
    const id = this.allocator.beginRequest();
    try {
      return await work();
    } finally {
      this.allocator.endRequest(id);
    }
  }

  /** Layer UUID rotation (spec §10): once, before the first change's data. */
  private async beforeChange(): Promise<void> {
    if (this.rotated || this.layerType === 'cache') return;
    this.rotation ??= this.rotateLayerUUID().catch((err: unknown) => {
      this.rotation = null;
      throw err;
    });
    await this.rotation;
  }

  private async rotateLayerUUID(): Promise<void> {
    const guid = uuidToBytes(uuidV4()) as Uint8Array;
    const next = withGuid(this.header, guid);
    await this.file.write(next, 0);
    await this.store.sync();
    this.header = next;
    this.uuid = headerGuid(next);
    this.rotated = true;
  }

  /**
   * FUA makes the change durable now. Changed bitmap slices stay in memory until a flush
   * writes them, so when too many pile up the writer waits for flushes: memory stays bounded
   * however rarely the client flushes.
   */
  private async afterChange(options: WriteOptions | undefined): Promise<void> {
    if (options?.fua) await this.store.flush();
    while (this.store.bitmaps.pinnedCount > this.dirtyLimit) await this.store.flush();
  }

  private checkRange(offset: number, length: number): void {
    if (this.closed) throw new RequestError('ESHUTDOWN', `${this.path}: the image is closed`);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new RequestError('EINVAL', `${this.path}: range ${offset}+${length} lies outside the image (${this.size} bytes)`);
    }
  }

  /** Writes and zeroes come in whole sectors: the stack pads the others (Layer.requestAlignment). */
  private checkAligned(offset: number, length: number): void {
    const bs = this.blockSize;
    if (offset % bs !== 0 || length % bs !== 0) {
      throw new RequestError('EINVAL', `${this.path}: ${offset}+${length} is not whole ${bs}-byte sectors (the stack pads writes to them)`);
    }
  }

  private checkWritable(): void {
    if (this.closed) throw new RequestError('ESHUTDOWN', `${this.path}: the image is closed`);
    if (this.readOnly) throw new RequestError('EPERM', `${this.path}: the image is open read-only`);
    this.store.checkHealthy();
  }
}

/** Where a map walk stands (resolve): the runs so far, the next byte, the run limit. */
interface MapWalk {
  runs: MappedRun[];
  pos: number;
  readonly end: number;
  readonly maxRuns: number;
  readonly states: { counted: number; distinct: number; last: string };
}

/** A piece of a partly written chunk whose bitmap slice is not in memory. */
interface SliceNeeded {
  readonly logical: number;
  readonly chunk: number;
  readonly length: number;
  readonly filePos: number;
}

/**
 * Counts the runs of distinct states among `runs` (from where the last call stopped); the
 * index where the run of state number `max + 1` begins once there is one, else -1.
 */
function stateBoundary(runs: readonly MappedRun[], seen: { counted: number; distinct: number; last: string }, max: number): number {
  for (; seen.counted < runs.length; seen.counted++) {
    const state = runs[seen.counted].state;
    if (state === seen.last) continue;
    seen.last = state;
    if (++seen.distinct > max) return seen.counted;
  }
  return -1;
}

function pushMapped(runs: MappedRun[], offset: number, length: number, state: RunState, fileOffset: number | null): void {
  if (length <= 0) return;
  const last = runs[runs.length - 1];
  if (
    last &&
    last.state === state &&
    last.offset + last.length === offset &&
    (fileOffset === null ? last.fileOffset === null : last.fileOffset !== null && last.fileOffset + last.length === fileOffset)
  ) {
    last.length += length;
    return;
  }
  runs.push({ offset, length, state, fileOffset });
}

/** Waits for every job (none is left running unobserved), then fails with the first error. */
async function settleAll(jobs: readonly Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(jobs);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}
