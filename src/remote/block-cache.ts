/**
 * A small in-memory cache of remote blocks, bounded in bytes, least recently used first out.
 * It only saves round trips for reads that come back soon (the stack's cache layer keeps what
 * was read for good); it never holds more than `maxBytes`.
 *
 * A block is a list of views of the buffers its bytes were received in (copying each block out
 * would cost a copy of every byte fetched), so memory is counted by those buffers: a buffer
 * counts whole while any block viewing it is kept, and blocks are given up, oldest first,
 * until the buffers still referenced fit. A block whose buffers are larger than `maxBytes` is
 * not kept at all.
 */
type Backing = ArrayBufferLike;
type Block = readonly Buffer[];

export class BlockCache {
  /** Map order is use order: the first entry is the least recently used. */
  private readonly blocks = new Map<number, Block>();
  /** Blocks kept of each backing buffer. */
  private readonly owners = new Map<Backing, number>();
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  /** Bytes of the backing buffers the kept blocks hold on to. */
  get usedBytes(): number {
    return this.bytes;
  }

  get(index: number): Block | undefined {
    const block = this.blocks.get(index);
    if (block) {
      this.blocks.delete(index);
      this.blocks.set(index, block);
    }
    return block;
  }

  set(index: number, block: Block): void {
    let own = 0;
    for (const owner of new Set(block.map((part) => part.buffer))) own += owner.byteLength;
    if (own > this.maxBytes) return;
    this.delete(index);
    this.blocks.set(index, block);
    for (const part of block) this.hold(part.buffer);
    for (const [oldest] of this.blocks) {
      if (this.bytes <= this.maxBytes) break;
      this.delete(oldest);
    }
  }

  delete(index: number): void {
    const block = this.blocks.get(index);
    if (!block) return;
    this.blocks.delete(index);
    for (const part of block) this.release(part.buffer);
  }

  clear(): void {
    this.blocks.clear();
    this.owners.clear();
    this.bytes = 0;
  }

  private hold(owner: Backing): void {
    const n = this.owners.get(owner) ?? 0;
    if (n === 0) this.bytes += owner.byteLength;
    this.owners.set(owner, n + 1);
  }

  private release(owner: Backing): void {
    const n = (this.owners.get(owner) ?? 1) - 1;
    if (n > 0) {
      this.owners.set(owner, n);
      return;
    }
    this.owners.delete(owner);
    this.bytes -= owner.byteLength;
  }
}
