/**
 * The in-memory map of an open image and the protocol that makes it durable (spec §11).
 *
 * - Stores: the active directory, every table (its exact on-disk bytes, patched in place), the
 *   bitmap cache, and what changed since the last flush: table pieces, new tables, new bitmap
 *   chunks, dirty slices, retired chunks, and chunks that left status 01/11 ("detached").
 * - States of a change: in memory only → snapshotted by a flush → on disk → committed.
 * - Invariants (what any crash leaves on disk is a map that opens cleanly and references only
 *   synced data, each chunk exactly once):
 *   1. the image changes the in-memory map only after the data it points to was written;
 *   2. a flush copies the dirty map first, then syncs the data, and only then writes the copies;
 *   3. bitmap slices are written and synced before the table
 *      entries that make them matter: a torn flush may show new bits under an old entry (the
 *      bits are ignored unless the entry is 11 with the same chunk) but never an entry 11 with
 *      stale bits. A chunk that went 11(P) → 10 → 11(Q) since the last flush would break that
 *      (new bits under the old entry 11(P)), so its on-disk entry is first set to 10 and synced.
 *      A group's new bitmap pointer is written and synced after its bitmap chunk and before
 *      the entries that need it (it lies in another sector of the table than most of them).
 *      So a flush writes, with a sync after each non-empty phase: data (sync only), detached
 *      entries, bitmaps, bitmap pointers, table pieces and new tables, then the directory;
 *   4. new tables are written and synced before the directory that points to them; the
 *      directory flip (directory.ts) is the commit;
 *   5. a chunk dropped by the map becomes reusable only after the flush that wrote the change;
 *   6. one flush runs at a time; callers arriving while one runs share the next one;
 *   7. a failed write leaves the snapshot's changes dirty for the next flush; a failed sync
 *      poisons the image (after a failed fsync the kernel may have dropped dirty pages, and the
 *      directory flip may or may not have landed): every later flush and change fails with EIO
 *      until the image is opened again, which finds whatever the disk really holds.
 */
import type { BlockFile } from '../../io/block-file.js';
import { CorruptedImageError, RequestError } from '../../block/errors.js';
import type { ChunkAllocator } from './allocator.js';
import { BitmapCache, type DirtySlice } from './bitmap-cache.js';
import { firstInvalidSector } from './bitmap.js';
import { encodeDirectoryBody, encodeSequence } from './directory.js';
import { ChunkStatus, bitmapEntryOffset, type Geometry } from './layout.js';
import type { LoadedMap } from './load.js';
import { PagedTable } from './paged-table.js';
import { hex } from './problems.js';
import {
  addressOf,
  bitmapChunkAt,
  entryChunk,
  entryStatus,
  firstChunkOfGroup,
  writeBitmapChunk,
  writeEntry,
} from './table.js';

export interface MapStoreOptions {
  /** Clean bitmap slices kept in memory. */
  readonly cacheSlices: number;
}

interface PendingWrite {
  readonly position: number;
  readonly bytes: Uint8Array;
}

/** How many writes of one phase a flush keeps in flight. */
const WRITE_CONCURRENCY = 32;
/** The longest write of zeros when a new table is written. */
const NEW_TABLE_ZERO_RUN = 64 * 1024;

export class MapStore {
  readonly geo: Geometry;
  readonly bitmaps: BitmapCache;
  /**
   * The directory: physical chunk of each table that exists. Kept sparse: the directory has
   * an entry per 126 GiB of the format's whole capacity (33,289 in Apple's layout, 260 KiB as
   * an array per open image) and a small image uses one or two.
   */
  private readonly tableChunks = new Map<number, number>();
  private readonly directoryEntries: number;
  private readonly tables: Map<number, PagedTable>;
  private readonly pieceBytes: number;
  private readonly dirtyPieces = new Map<number, Set<number>>();
  private readonly newTables = new Set<number>();
  private readonly newBitmapGroups = new Set<number>();
  private readonly detached = new Set<number>();
  private readonly loading = new Map<number, { chunk: number; bytes: Promise<Buffer> }>();
  private directoryDirty = false;
  private active: 0 | 1;
  private readonly sequences: [bigint, bigint];
  private readonly directoryOffsets: readonly [number, number];
  private dataChunks = 0;
  private running: Promise<void> | null = null;
  private queued: Promise<void> | null = null;
  private failedSync: RequestError | null = null;

  constructor(
    private readonly file: BlockFile,
    loaded: LoadedMap,
    private readonly allocator: ChunkAllocator,
    private readonly metadataChunk: number,
    options: MapStoreOptions,
  ) {
    this.geo = loaded.geometry;
    this.directoryEntries = loaded.tableChunks.length;
    loaded.tableChunks.forEach((chunk, t) => {
      if (chunk !== 0) this.tableChunks.set(t, chunk);
    });
    this.tables = loaded.tables;
    this.active = loaded.active;
    this.sequences = [loaded.sequences[0], loaded.sequences[1]];
    this.directoryOffsets = loaded.header.directoryOffsets;
    this.pieceBytes = this.geo.chunkSize % 4096 === 0 ? 4096 : 512;
    this.bitmaps = new BitmapCache(options.cacheSlices, this.geo.sliceBytes);
    this.dataChunks = this.countDataChunks();
  }

  /** Chunks with status 01 or 11, the metadata chunk left out. */
  get dataChunkCount(): number {
    return this.dataChunks;
  }

  status(logical: number): ChunkStatus {
    const a = addressOf(this.geo, logical);
    const table = this.tables.get(a.table);
    return table ? entryStatus(table, a.entryOffset) : ChunkStatus.neverWritten;
  }

  chunk(logical: number): number {
    const a = addressOf(this.geo, logical);
    const table = this.tables.get(a.table);
    return table ? entryChunk(table, a.entryOffset) : 0;
  }

  /** Calls `visit` with every logical chunk of status 01 or 11 and its physical chunk (metadata left out). */
  forEachDataChunk(visit: (logical: number, physical: number) => void): void {
    const perTable = this.geo.chunksPerTable;
    for (const [t, table] of this.tables) {
      for (let k = 0; k < perTable; k++) {
        const logical = t * perTable + k;
        const a = addressOf(this.geo, logical);
        if (logical !== this.metadataChunk && isData(entryStatus(table, a.entryOffset))) visit(logical, entryChunk(table, a.entryOffset));
      }
    }
  }

  /** True when the whole table holding L is absent (every chunk in it is 00). */
  hasTable(logical: number): boolean {
    return this.tables.has(Math.floor(logical / this.geo.chunksPerTable));
  }

  /** Changes L's entry in memory; creates its table when needed. */
  setEntry(logical: number, status: ChunkStatus, chunk: number): void {
    const a = addressOf(this.geo, logical);
    const table = this.tables.get(a.table) ?? this.createTable(a.table);
    const old = entryStatus(table, a.entryOffset);
    writeEntry(table, a.entryOffset, status, chunk);
    this.touch(a.table, a.entryOffset);
    if (logical !== this.metadataChunk) this.dataChunks += isData(status) - isData(old);
    if (isData(old) && !isData(status)) this.detached.add(logical);
  }

  /** Gives L's group a bitmap chunk if it has none yet (L's table exists). */
  ensureBitmapChunk(logical: number): void {
    const a = addressOf(this.geo, logical);
    const table = this.tables.get(a.table) ?? this.createTable(a.table);
    if (bitmapChunkAt(table, a.bitmapEntryOffset) !== 0) return;
    writeBitmapChunk(table, a.bitmapEntryOffset, this.allocator.allocate());
    this.touch(a.table, a.bitmapEntryOffset);
    this.newBitmapGroups.add(a.table * this.geo.groupsPerTable + a.group);
  }

  /**
   * Runs `use` on L's slice, reading the slice from disk on a miss; `use` runs synchronously,
   * so the view it gets is valid throughout. With `change`, the slice is marked changed and
   * `use` may write to it. Null when L is not (or no longer) status 11 in `chunk` (the caller
   * looks at the map again).
   */
  async withSlice<T>(logical: number, chunk: number, change: boolean, use: (slice: Uint8Array) => T): Promise<T | null> {
    for (;;) {
      if (this.status(logical) !== ChunkStatus.partial || this.chunk(logical) !== chunk) return null;
      const cached = change ? this.bitmaps.mutableView(logical) : this.bitmaps.view(logical);
      if (cached) return use(cached);
      const bytes = await this.load(logical, chunk);
      if (this.status(logical) !== ChunkStatus.partial || this.chunk(logical) !== chunk) return null;
      this.bitmaps.insertClean(logical, bytes);
    }
  }

  /** Reads L's slice from disk; concurrent misses of one chunk share one read. */
  private load(logical: number, chunk: number): Promise<Buffer> {
    const pending = this.loading.get(logical);
    if (pending && pending.chunk === chunk) return pending.bytes;
    const entry = { chunk, bytes: this.readSlice(logical) };
    this.loading.set(logical, entry);
    const forget = (): void => {
      if (this.loading.get(logical) === entry) this.loading.delete(logical);
    };
    entry.bytes.then(forget, forget);
    return entry.bytes;
  }

  /** A fresh all-zero slice for a chunk entering status 11. */
  installSlice(logical: number): void {
    this.bitmaps.install(logical);
  }

  dropSlice(logical: number): void {
    this.bitmaps.drop(logical);
  }

  /** Syncs the file; a failure poisons the image (invariant 7). */
  async sync(): Promise<void> {
    this.checkHealthy();
    try {
      await this.file.sync();
    } catch (err) {
      this.failedSync ??= new RequestError(
        'EIO',
        `${this.file.path}: a sync failed (${(err as Error).message}); changes since the last flush may be lost: open the image again`,
      );
      throw err;
    }
  }

  /** Throws once a sync has failed (invariant 7). */
  checkHealthy(): void {
    if (this.failedSync) throw this.failedSync;
  }

  /** Makes every change so far durable; see the invariants above. */
  flush(): Promise<void> {
    if (this.failedSync) return Promise.reject(this.failedSync);
    if (this.queued) return this.queued;
    if (!this.running) return this.startFlush();
    const next = this.running
      .catch(() => undefined)
      .then(() => {
        this.queued = null;
        return this.startFlush();
      });
    this.queued = next;
    return next;
  }

  private startFlush(): Promise<void> {
    const run: Promise<void> = this.runFlush().finally(() => {
      if (this.running === run) this.running = null;
    });
    this.running = run;
    return run;
  }

  private async runFlush(): Promise<void> {
    this.checkHealthy();
    const snap = this.snapshot();
    try {
      await this.sync();
      for (const phase of [snap.detach, snap.bitmapWrites, snap.bitmapPointers, snap.tableWrites]) {
        if (phase.length === 0) continue;
        await writeAll(this.file, phase);
        await this.sync();
      }
      if (snap.directory) await this.commitDirectory(snap.directory);
    } catch (err) {
      this.restore(snap);
      throw err;
    }
    this.allocator.commit(snap.retired);
    this.bitmaps.settle(snap.slices, true);
  }

  /** Copies every dirty piece of the map and clears the dirty marks (invariant 2). */
  private snapshot(): Snapshot {
    const geo = this.geo;
    const retired = this.allocator.takeRetired();
    const slices = this.bitmaps.takeDirty();
    const newTables = [...this.newTables];
    const newGroups = [...this.newBitmapGroups];
    const pieces = [...this.dirtyPieces].map(([t, set]) => [t, [...set]] as const);
    const directory = this.directoryDirty ? this.directoryArray() : null;
    const detached = [...this.detached].filter(
      (l) => this.status(l) === ChunkStatus.partial && !this.newTables.has(addressOf(geo, l).table),
    );
    this.newTables.clear();
    this.newBitmapGroups.clear();
    this.dirtyPieces.clear();
    this.detached.clear();
    this.directoryDirty = false;

    const tableWrites: PendingWrite[] = [];
    // A new table is written page by page (absent pages from one zero buffer): a whole 1 MiB
    // copy per new table made hundreds of exports' first syncs the server's peak memory.
    const zeros = newTables.length > 0 ? Buffer.alloc(Math.min(geo.chunkSize, NEW_TABLE_ZERO_RUN)) : null;
    for (const t of newTables) {
      const table = this.tables.get(t) as PagedTable;
      for (const w of table.writes(zeros as Buffer)) tableWrites.push({ position: this.tableChunk(t) * geo.chunkSize + w.offset, bytes: w.bytes });
    }
    for (const [t, list] of pieces) {
      const table = this.tables.get(t) as PagedTable;
      for (const p of list) {
        const copy = table.copy(p * this.pieceBytes, (p + 1) * this.pieceBytes);
        tableWrites.push({ position: this.tableChunk(t) * geo.chunkSize + p * this.pieceBytes, bytes: copy });
      }
    }

    const bitmapWrites: PendingWrite[] = [];
    const groupsWritten = new Set<number>();
    for (const s of slices) {
      const a = addressOf(geo, s.logical);
      groupsWritten.add(a.table * geo.groupsPerTable + a.group);
      const bitmap = bitmapChunkAt(this.tables.get(a.table) as PagedTable, a.bitmapEntryOffset);
      bitmapWrites.push({ position: bitmap * geo.chunkSize + a.sliceOffset, bytes: s.bytes });
    }
    // Only the slices of status-11 chunks are ever read, and each is written before its entry
    // says 11, so a new bitmap chunk needs no other bytes; but it must lie inside the file
    // before the table points at it, so a new chunk without any slice to write gets one.
    for (const id of newGroups) {
      if (groupsWritten.has(id)) continue;
      const t = Math.floor(id / geo.groupsPerTable);
      const bitmap = bitmapChunkAt(this.tables.get(t) as PagedTable, bitmapEntryOffset(geo, id - t * geo.groupsPerTable));
      bitmapWrites.push({ position: bitmap * geo.chunkSize, bytes: new Uint8Array(geo.sliceBytes) });
    }
    // Invariant 3: an entry that was 11 on disk and got a new chunk is first set to 10, alone.
    const discarded = Buffer.alloc(8);
    writeEntry(discarded, 0, ChunkStatus.discarded, 0);
    const detach: PendingWrite[] = detached.map((l) => {
      const a = addressOf(geo, l);
      return { position: this.tableChunk(a.table) * geo.chunkSize + a.entryOffset, bytes: discarded };
    });
    // A group's new bitmap pointer sits in another piece of the table than most of its entries:
    // it is written alone, after the bitmap chunk and before the entries that need it.
    const bitmapPointers: PendingWrite[] = [];
    for (const id of newGroups) {
      const t = Math.floor(id / geo.groupsPerTable);
      if (newTables.includes(t)) continue;
      const at = bitmapEntryOffset(geo, id - t * geo.groupsPerTable);
      const pointer = (this.tables.get(t) as PagedTable).copy(at, at + 8);
      bitmapPointers.push({ position: this.tableChunk(t) * geo.chunkSize + at, bytes: pointer });
    }
    return { retired, slices, newTables, newGroups, pieces, directory, detached, detach, bitmapPointers, tableWrites, bitmapWrites };
  }

  /** Puts a failed flush's changes back, so the next flush writes them again. */
  private restore(snap: Snapshot): void {
    this.allocator.restore(snap.retired);
    this.bitmaps.settle(snap.slices, false);
    for (const t of snap.newTables) {
      this.newTables.add(t);
      this.dirtyPieces.delete(t);
    }
    for (const g of snap.newGroups) this.newBitmapGroups.add(g);
    for (const [t, list] of snap.pieces) {
      if (this.newTables.has(t)) continue;
      const set = this.dirtyPieces.get(t) ?? new Set<number>();
      for (const p of list) set.add(p);
      this.dirtyPieces.set(t, set);
    }
    for (const l of snap.detached) this.detached.add(l);
    if (snap.directory) this.directoryDirty = true;
  }

  /** Invariant 4: body of the inactive copy, sync, then its new sequence, sync. */
  private async commitDirectory(tables: Float64Array): Promise<void> {
    const target = this.active === 0 ? 1 : 0;
    const offset = this.directoryOffsets[target];
    await this.file.write(encodeDirectoryBody(tables), offset + 8);
    await this.sync();
    const sequence = this.sequences[this.active] + 1n;
    await this.file.write(encodeSequence(sequence), offset);
    await this.sync();
    this.sequences[target] = sequence;
    this.active = target;
  }

  private createTable(t: number): PagedTable {
    const table = new PagedTable(this.geo.chunkSize);
    this.tables.set(t, table);
    this.tableChunks.set(t, this.allocator.allocate());
    this.newTables.add(t);
    this.directoryDirty = true;
    return table;
  }

  private tableChunk(t: number): number {
    return this.tableChunks.get(t) ?? 0;
  }

  /** The whole directory as it is written to disk. */
  private directoryArray(): Float64Array {
    const out = new Float64Array(this.directoryEntries);
    for (const [t, chunk] of this.tableChunks) out[t] = chunk;
    return out;
  }

  private touch(t: number, offset: number): void {
    if (this.newTables.has(t)) return;
    let set = this.dirtyPieces.get(t);
    if (!set) {
      set = new Set();
      this.dirtyPieces.set(t, set);
    }
    set.add(Math.floor(offset / this.pieceBytes));
  }

  private async readSlice(logical: number): Promise<Buffer> {
    const a = addressOf(this.geo, logical);
    const table = this.tables.get(a.table);
    const bitmap = table ? bitmapChunkAt(table, a.bitmapEntryOffset) : 0;
    if (bitmap === 0) {
      throw new CorruptedImageError(this.file.path, `logical chunk ${logical} is partly written but its group has no bitmap chunk`);
    }
    const slice = Buffer.allocUnsafe(this.geo.sliceBytes);
    const position = bitmap * this.geo.chunkSize + a.sliceOffset;
    await this.file.read(slice, position);
    const bad = firstInvalidSector(slice);
    if (bad >= 0) {
      throw new CorruptedImageError(
        this.file.path,
        `bitmap of logical chunk ${logical} (chunk ${bitmap}, byte ${hex(position)}) has the invalid state 11 for sector ${bad}`,
      );
    }
    return slice;
  }

  private countDataChunks(): number {
    const geo = this.geo;
    let n = 0;
    for (const [t, table] of this.tables) {
      for (let g = 0; g < geo.groupsPerTable; g++) {
        for (let j = 0, off = g * geo.groupBytes; j < geo.entriesPerGroup; j++, off += 8) {
          // Status 01 (0x40..) and 11 (0xC0..) are the entries with bit 62 set; 00 and 10 are not.
          if ((table.readUInt8(off) & 0x40) === 0) continue;
          if (t * geo.chunksPerTable + g * geo.entriesPerGroup + j !== this.metadataChunk) n++;
        }
      }
    }
    return n;
  }
}

interface Snapshot {
  readonly retired: ReturnType<ChunkAllocator['takeRetired']>;
  readonly slices: DirtySlice[];
  readonly newTables: number[];
  readonly newGroups: number[];
  readonly pieces: ReadonlyArray<readonly [number, readonly number[]]>;
  readonly directory: Float64Array | null;
  readonly detached: number[];
  readonly detach: PendingWrite[];
  readonly bitmapPointers: PendingWrite[];
  readonly tableWrites: PendingWrite[];
  readonly bitmapWrites: PendingWrite[];
}

function isData(status: ChunkStatus): 0 | 1 {
  return status === ChunkStatus.full || status === ChunkStatus.partial ? 1 : 0;
}

/** Writes everything of one phase, a bounded number at a time. */
async function writeAll(file: BlockFile, writes: readonly PendingWrite[]): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < writes.length) {
      const w = writes[next++];
      await file.write(w.bytes, w.position);
    }
  };
  await Promise.all(Array.from({ length: Math.min(WRITE_CONCURRENCY, writes.length) }, lane));
}
