/**
 * Physical chunk allocation (spec §1, §11).
 *
 * - Stores: the end of the file in chunks (new chunks are appended there), a queue of free
 *   chunks, the chunks retired by map changes not yet committed, and the requests in flight.
 * - States of a chunk: in use → retired (the in-memory map dropped it, the on-disk map may
 *   still reference it) → free (the flush that wrote the change committed) → in use again.
 *   A chunk retired to give space back (a bounded cache's eviction) waits between retired and
 *   free until its caller has punched it out of the file: never while a map or a request may
 *   still see it, and never after it was handed out again.
 *   Chunks leaked by a crash are found at open and start out free; a chunk allocated for a
 *   write that then failed is free at once (no map ever referenced it).
 * - Invariants: a chunk is never handed out while any on-disk map could reference it, nor while
 *   a request that started before it was retired may still read or write it (a read that looked
 *   up a chunk just before a discard must not see the chunk's next owner).
 */

interface FreeChunk {
  readonly chunk: number;
  /** The last request id issued when the chunk was retired. */
  readonly retiredAfter: number;
  /** Punch it out of the file before it is free. */
  readonly punch?: boolean;
}

export class ChunkAllocator {
  private end: number;
  private free: FreeChunk[] = [];
  private freeHead = 0;
  private retired: FreeChunk[] = [];
  /** Committed chunks waiting to be punched out of the file. */
  private toPunch: FreeChunk[] = [];
  private lastRequest = 0;
  /** Ids of requests in flight, in start order: the first is the oldest. */
  private readonly inFlight = new Set<number>();

  constructor(endChunk: number, leaked: readonly number[] = []) {
    this.end = endChunk;
    for (const chunk of leaked) this.free.push({ chunk, retiredAfter: 0 });
  }

  /** First chunk past everything ever allocated. */
  get endChunk(): number {
    return this.end;
  }

  get freeCount(): number {
    return this.free.length - this.freeHead;
  }

  beginRequest(): number {
    const id = ++this.lastRequest;
    this.inFlight.add(id);
    return id;
  }

  endRequest(id: number): void {
    this.inFlight.delete(id);
  }

  allocate(): number {
    const head = this.free[this.freeHead];
    if (head && head.retiredAfter < this.oldestInFlight()) {
      this.freeHead++;
      if (this.freeHead > 1024 && this.freeHead * 2 > this.free.length) {
        this.free = this.free.slice(this.freeHead);
        this.freeHead = 0;
      }
      return head.chunk;
    }
    return this.end++;
  }

  /** A chunk that no map, on disk or in memory, ever referenced. */
  release(chunk: number): void {
    this.free.push({ chunk, retiredAfter: this.lastRequest });
  }

  /**
   * A chunk the in-memory map no longer references; free once the change is committed (with
   * `punch`, once it is committed and then punched: see takePunchable).
   */
  retire(chunk: number, punch = false): void {
    this.retired.push({ chunk, retiredAfter: this.lastRequest, punch });
  }

  /**
   * Committed chunks that no request can see any more, to punch out of the file; each must be
   * handed back with `release` afterwards (punched or not).
   */
  takePunchable(): number[] {
    const oldest = this.oldestInFlight();
    const ready = this.toPunch.filter((f) => f.retiredAfter < oldest);
    this.toPunch = this.toPunch.filter((f) => f.retiredAfter >= oldest);
    return ready.map((f) => f.chunk);
  }

  /** The chunks retired so far, handed to a flush; `commit` or `restore` them afterwards. */
  takeRetired(): readonly FreeChunk[] {
    const taken = this.retired;
    this.retired = [];
    return taken;
  }

  commit(taken: readonly FreeChunk[]): void {
    for (const f of taken) (f.punch ? this.toPunch : this.free).push(f);
  }

  restore(taken: readonly FreeChunk[]): void {
    this.retired = [...taken, ...this.retired];
  }

  /** Free chunks, ascending (retired ones not included; committed ones awaiting a punch are). */
  freeChunks(): number[] {
    return [...this.free.slice(this.freeHead), ...this.toPunch].map((f) => f.chunk).sort((a, b) => a - b);
  }

  /**
   * Gives up free chunks at the end of the file, so the file can be shortened; returns the new
   * end. Only for a quiet image (no request in flight, nothing retired).
   */
  trimTail(): number {
    const free = new Set(this.freeChunks());
    while (this.end > 0 && free.has(this.end - 1)) free.delete(--this.end);
    this.free = [...free].map((chunk) => ({ chunk, retiredAfter: 0 }));
    this.freeHead = 0;
    this.toPunch = [];
    return this.end;
  }

  private oldestInFlight(): number {
    const first = this.inFlight.values().next();
    return first.done ? Infinity : first.value;
  }
}
