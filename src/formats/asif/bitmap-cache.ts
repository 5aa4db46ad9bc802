/**
 * The bounded cache of bitmap slices, keyed by logical chunk (DESIGN.md: the bitmaps of a large
 * image do not fit the memory budget, so only some live in memory).
 *
 * - Stores: clean slices (equal to their bytes on disk) in least-recently-used order, and
 *   pinned slices (changed since the last flush, or being written by the running flush).
 * - States of a slice: absent → clean (read from disk) → pinned (dirty) → being flushed →
 *   clean again once the flush wrote it, unless it changed meanwhile (then it stays dirty).
 * - Invariants: only clean slices are evicted, so no change is ever lost; the clean part never
 *   holds more than `capacity` slices (pinned ones are bounded by the flush that the image
 *   starts when too many pile up); at most one slice object exists per chunk in the cache, and
 *   a chunk that (re)enters status 11 replaces any older slice with a fresh one.
 */

export interface DirtySlice {
  readonly logical: number;
  readonly bytes: Uint8Array;
}

export class BitmapCache {
  private readonly clean = new Map<number, Uint8Array>();
  private readonly pinned = new Map<number, Uint8Array>();
  private readonly dirty = new Set<number>();
  private readonly flushing = new Set<number>();

  constructor(readonly capacity: number) {}

  /** The cached slice, marking it recently used; undefined on a miss. */
  get(logical: number): Uint8Array | undefined {
    const pinned = this.pinned.get(logical);
    if (pinned) return pinned;
    const clean = this.clean.get(logical);
    if (clean) {
      this.clean.delete(logical);
      this.clean.set(logical, clean);
    }
    return clean;
  }

  /** Adds a slice just read from disk, unless the chunk already has one. */
  insertClean(logical: number, slice: Uint8Array): Uint8Array {
    const existing = this.get(logical);
    if (existing) return existing;
    this.clean.set(logical, slice);
    this.evict();
    return slice;
  }

  /** Installs a new slice (a chunk entering status 11), replacing any older one; it is dirty. */
  install(logical: number, slice: Uint8Array): void {
    this.clean.delete(logical);
    this.pinned.set(logical, slice);
    this.dirty.add(logical);
  }

  /** Records that the cached slice changed: it is pinned until a flush writes it. */
  markDirty(logical: number, slice: Uint8Array): void {
    this.clean.delete(logical);
    this.pinned.set(logical, slice);
    this.dirty.add(logical);
  }

  /** Forgets a chunk's slice (its chunk left status 11). */
  drop(logical: number): void {
    this.clean.delete(logical);
    this.pinned.delete(logical);
    this.dirty.delete(logical);
  }

  /** The dirty slices as copies, for a flush; they stay pinned until `settle`. */
  takeDirty(): DirtySlice[] {
    const out: DirtySlice[] = [];
    for (const logical of this.dirty) {
      const slice = this.pinned.get(logical);
      if (!slice) continue;
      this.flushing.add(logical);
      out.push({ logical, bytes: Uint8Array.from(slice) });
    }
    this.dirty.clear();
    return out;
  }

  /** Ends a flush: written slices become clean (unless changed since); failed ones dirty again. */
  settle(taken: readonly DirtySlice[], written: boolean): void {
    for (const { logical } of taken) {
      this.flushing.delete(logical);
      const slice = this.pinned.get(logical);
      if (!slice) continue;
      if (!written) {
        this.dirty.add(logical);
      } else if (!this.dirty.has(logical)) {
        this.pinned.delete(logical);
        this.clean.set(logical, slice);
      }
    }
    this.evict();
  }

  get pinnedCount(): number {
    return this.pinned.size;
  }

  get dirtyCount(): number {
    return this.dirty.size;
  }

  get cleanCount(): number {
    return this.clean.size;
  }

  private evict(): void {
    while (this.clean.size > this.capacity) {
      const oldest = this.clean.keys().next();
      if (oldest.done) return;
      this.clean.delete(oldest.value);
    }
  }
}
