/**
 * Which data chunk of a bounded cache layer to give up next: the CLOCK approximation of
 * least-recently-used, kept per physical chunk.
 *
 * - Stores: for each physical chunk, the logical chunk it holds (0 = none, else logical + 1)
 *   and one "used since the hand last passed" bit; the hand's position. 9 bytes per chunk of
 *   file (1 TiB of 1 MiB chunks: 9 MiB), whatever the logical address space.
 * - States of a chunk: not data → data, used → data, not used since the hand passed → evicted.
 * - The order survives a restart only approximately, by design: nothing extra is written to
 *   disk; after an open every bit is clear, so the hand gives chunks up in file order, which is
 *   the order they were filled in, and reads soon set the bits of the chunks still in use.
 */
export class ChunkClock {
  private owner = new Float64Array(0);
  private used = new Uint8Array(0);
  private hand = 0;
  private count = 0;

  /** Chunks holding data that the clock may give up. */
  get size(): number {
    return this.count;
  }

  assign(physical: number, logical: number): void {
    this.grow(physical + 1);
    if (this.owner[physical] === 0) this.count++;
    this.owner[physical] = logical + 1;
    this.used[physical] = 1;
  }

  unassign(physical: number): void {
    if (physical >= this.owner.length || this.owner[physical] === 0) return;
    this.owner[physical] = 0;
    this.used[physical] = 0;
    this.count--;
  }

  /** Forgets every use (after an open, nothing is known of the order). */
  resetUse(): void {
    this.used.fill(0);
  }

  touch(physical: number): void {
    if (physical < this.used.length) this.used[physical] = 1;
  }

  /**
   * The next chunk to give up, skipping those `skip` says must stay (a write is filling them):
   * `{ physical, logical }`, or null when every data chunk must stay.
   */
  victim(skip: (logical: number) => boolean): { physical: number; logical: number } | null {
    const n = this.owner.length;
    // Two sweeps: the first clears the bits the second finds clear.
    for (let steps = 0; steps < 2 * n + 1 && this.count > 0; steps++) {
      const p = this.hand;
      this.hand = (this.hand + 1) % n;
      const owner = this.owner[p];
      if (owner === 0) continue;
      if (this.used[p]) {
        this.used[p] = 0;
        continue;
      }
      if (skip(owner - 1)) continue;
      return { physical: p, logical: owner - 1 };
    }
    return null;
  }

  private grow(length: number): void {
    if (length <= this.owner.length) return;
    const size = Math.max(length, this.owner.length * 2, 64);
    const owner = new Float64Array(size);
    owner.set(this.owner);
    const used = new Uint8Array(size);
    used.set(this.used);
    this.owner = owner;
    this.used = used;
  }
}
