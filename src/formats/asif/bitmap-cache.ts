/**
 * The bounded cache of bitmap slices, keyed by logical chunk (DESIGN.md: the bitmaps of a large
 * image do not fit the memory budget, so only some live in memory).
 *
 * - Stores: slices in slots of large slab buffers (one small allocation per slice would cost
 *   more in allocator overhead than the slice itself); clean slices (equal to their bytes on
 *   disk) in least-recently-used order; pinned slices (changed since the last flush, or being
 *   written by the running flush).
 * - States of a slice: absent → clean (read from disk) → pinned (dirty) → lent to a flush →
 *   clean again once the flush wrote it. A flush writes straight from the slot it was lent;
 *   a writer that changes a lent slice first copies it to a new slot (copy on write), so the
 *   flush writes exactly what it snapshotted and the changed copy stays dirty.
 * - Invariants: only clean slices are evicted, so no change is ever lost; the clean part never
 *   holds more than `capacity` slices (pinned ones are bounded by the image, which makes
 *   writers wait for a flush when too many pile up); a slot is reused only after its slice left
 *   the cache and no flush holds it; views of a slot go only to synchronous code and are not
 *   kept across an await, so nobody can write through a view into a slot's next owner.
 */

export interface DirtySlice {
  readonly logical: number;
  readonly slot: number;
  /** The slot's bytes; they stay as they are until the flush settles. */
  readonly bytes: Uint8Array;
}

/**
 * Bytes per slab: big enough that slabs are few, small enough that a cache holding a few hundred
 * slices stays small (a server with hundreds of busy exports paid 256 KiB slabs for ~300 KiB of
 * slices each).
 */
const SLAB_BYTES = 32 * 1024;

export class BitmapCache {
  private readonly clean = new Map<number, number>();
  private readonly pinned = new Map<number, number>();
  private readonly dirty = new Set<number>();
  /** Slots a running flush is writing from. */
  private readonly lent = new Set<number>();
  private readonly slabs: Buffer[] = [];
  private readonly freeSlots: number[] = [];
  private readonly perSlab: number;
  private slots = 0;

  constructor(
    readonly capacity: number,
    private readonly sliceBytes: number,
  ) {
    this.perSlab = Math.max(1, Math.floor(SLAB_BYTES / sliceBytes));
  }

  /**
   * The cached slice, marking it recently used; for synchronous use only (the view must not
   * outlive the caller's current turn: after an await its slot may belong to another chunk).
   */
  view(logical: number): Uint8Array | undefined {
    let slot = this.pinned.get(logical);
    if (slot === undefined) {
      slot = this.clean.get(logical);
      if (slot === undefined) return undefined;
      this.clean.delete(logical);
      this.clean.set(logical, slot);
    }
    return this.slotView(slot);
  }

  /** Adds a slice just read from disk (copied), unless the chunk already has one. */
  insertClean(logical: number, bytes: Uint8Array): void {
    if (this.pinned.has(logical) || this.clean.has(logical)) return;
    const slot = this.takeSlot();
    this.slotView(slot).set(bytes);
    this.clean.set(logical, slot);
    this.evict();
  }

  /** Installs an all-zero slice (a chunk entering status 11), replacing any older one; it is dirty. */
  install(logical: number): void {
    this.drop(logical);
    const slot = this.takeSlot();
    this.slotView(slot).fill(0);
    this.pinned.set(logical, slot);
    this.dirty.add(logical);
  }

  /**
   * The cached slice for changing it (synchronously), or undefined on a miss. It becomes
   * dirty and pinned; if a flush is writing its slot, the change goes to a copy.
   */
  mutableView(logical: number): Uint8Array | undefined {
    let slot = this.pinned.get(logical) ?? this.clean.get(logical);
    if (slot === undefined) return undefined;
    if (this.lent.has(slot)) {
      const copy = this.takeSlot();
      this.slotView(copy).set(this.slotView(slot));
      slot = copy;
    }
    this.clean.delete(logical);
    this.pinned.set(logical, slot);
    this.dirty.add(logical);
    return this.slotView(slot);
  }

  /** Forgets a chunk's slice (its chunk left status 11). */
  drop(logical: number): void {
    const slot = this.pinned.get(logical) ?? this.clean.get(logical);
    if (slot === undefined) return;
    this.clean.delete(logical);
    this.pinned.delete(logical);
    this.dirty.delete(logical);
    if (!this.lent.has(slot)) this.freeSlots.push(slot);
  }

  /** The dirty slices, for a flush: their slots are lent to it until `settle`. */
  takeDirty(): DirtySlice[] {
    const out: DirtySlice[] = [];
    for (const logical of this.dirty) {
      const slot = this.pinned.get(logical) as number;
      this.lent.add(slot);
      out.push({ logical, slot, bytes: this.slotView(slot) });
    }
    this.dirty.clear();
    return out;
  }

  /**
   * Ends a flush: written slices become clean (unless changed since); failed ones are dirty
   * again; slots whose chunk moved on (copied, dropped) are freed.
   */
  settle(taken: readonly DirtySlice[], written: boolean): void {
    for (const { logical, slot } of taken) {
      this.lent.delete(slot);
      if (this.pinned.get(logical) !== slot) {
        this.freeSlots.push(slot);
      } else if (!written) {
        this.dirty.add(logical);
      } else if (!this.dirty.has(logical)) {
        this.pinned.delete(logical);
        this.clean.set(logical, slot);
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

  /** Slots ever handed out: the high-water mark of slices in memory (slabs are kept for reuse). */
  get slotCount(): number {
    return this.slots;
  }

  private slotView(slot: number): Uint8Array {
    const slab = this.slabs[Math.floor(slot / this.perSlab)];
    const at = (slot % this.perSlab) * this.sliceBytes;
    return slab.subarray(at, at + this.sliceBytes);
  }

  private takeSlot(): number {
    const free = this.freeSlots.pop();
    if (free !== undefined) return free;
    if (this.slots === this.slabs.length * this.perSlab) this.slabs.push(Buffer.alloc(this.perSlab * this.sliceBytes));
    return this.slots++;
  }

  private evict(): void {
    while (this.clean.size > this.capacity) {
      const oldest = this.clean.entries().next();
      if (oldest.done) return;
      const [logical, slot] = oldest.value;
      this.clean.delete(logical);
      this.freeSlots.push(slot);
    }
  }
}
