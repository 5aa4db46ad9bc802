/**
 * A small in-memory cache of remote blocks, bounded in bytes, least recently used first out.
 * It only saves round trips for reads that come back soon (the stack's cache layer keeps what
 * was read for good); it never holds more than `maxBytes` (a block larger than that is not kept).
 */
export class BlockCache {
  /** Map order is use order: the first entry is the least recently used. */
  private readonly blocks = new Map<number, Buffer>();
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  get usedBytes(): number {
    return this.bytes;
  }

  get(index: number): Buffer | undefined {
    const block = this.blocks.get(index);
    if (block) {
      this.blocks.delete(index);
      this.blocks.set(index, block);
    }
    return block;
  }

  set(index: number, block: Buffer): void {
    if (block.length > this.maxBytes) return;
    this.delete(index);
    this.blocks.set(index, block);
    this.bytes += block.length;
    for (const [oldest, old] of this.blocks) {
      if (this.bytes <= this.maxBytes) break;
      this.blocks.delete(oldest);
      this.bytes -= old.length;
    }
  }

  delete(index: number): void {
    const block = this.blocks.get(index);
    if (!block) return;
    this.blocks.delete(index);
    this.bytes -= block.length;
  }

  clear(): void {
    this.blocks.clear();
    this.bytes = 0;
  }
}
