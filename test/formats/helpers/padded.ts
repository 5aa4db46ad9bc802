/**
 * Byte-granular writes to an ASIF image the way the server gives them: padded to whole sectors
 * by the stack's padding (src/stack/padding.ts, the one place that pads), overlapping ones
 * ordered by a range lock on ranges rounded out to sectors, as the export orders them. Tests
 * of any byte range use this; tests of the image's own sector handling call it directly.
 */
import { RangeLock } from '../../../src/block/range-lock.js';
import type { Layer, WriteOptions, ZeroOptions } from '../../../src/formats/layer.js';
import { padTrim, padWrite, padZero, type PaddingTarget } from '../../../src/stack/padding.js';

export class PaddedImage {
  private readonly locks = new RangeLock();
  private readonly target: PaddingTarget;

  constructor(readonly image: Layer) {
    this.target = {
      unit: image.requestAlignment ?? image.blockSize,
      read: (buf, offset) => image.read(buf, offset),
      write: (buf, offset, options) => image.write(buf, offset, options),
      zero: (offset, length, options) => image.zero(offset, length, options),
      discard: (offset, length, options) => image.discard(offset, length, options),
    };
  }

  private async ordered(offset: number, length: number, op: () => Promise<void>): Promise<void> {
    const u = this.target.unit;
    const start = Math.floor(offset / u) * u;
    const release = await this.locks.acquire(start, Math.ceil((offset + length) / u) * u - start);
    try {
      await op();
    } finally {
      release();
    }
  }

  write(buf: Buffer, offset: number, options?: WriteOptions): Promise<void> {
    return this.ordered(offset, buf.length, () => padWrite(this.target, buf, offset, options));
  }

  zero(offset: number, length: number, options?: ZeroOptions): Promise<void> {
    return this.ordered(offset, length, () => padZero(this.target, offset, length, options));
  }

  discard(offset: number, length: number, options?: WriteOptions): Promise<void> {
    return this.ordered(offset, length, () => padTrim(this.target, offset, length, options));
  }
}
