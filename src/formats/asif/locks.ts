/**
 * A lock per key (a sector number). Writes that do not cover whole sectors read, patch and
 * write back their edge sectors; two such writes to different bytes of one sector do not
 * overlap, so the server lets them run together, and without this lock one patch would undo
 * the other. Waiters run in arrival order; a key's entry goes away when its last holder leaves.
 */
export class KeyedLock {
  private readonly tails = new Map<number, Promise<void>>();

  /** Resolves to the release function once every earlier holder of `key` has released it. */
  async acquire(key: number): Promise<() => void> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tail = previous.then(() => mine);
    this.tails.set(key, tail);
    await previous;
    return () => {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    };
  }
}
