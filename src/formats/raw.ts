/**
 * RAW images: the file's bytes are the disk's bytes, byte for byte.
 *
 * - Stores: nothing but the data; no header, no UUID, no map. The virtual size is the file size.
 * - States: the file's holes are `zero`, the rest `data`, where the file system tells them apart
 *   (SEEK_DATA/SEEK_HOLE through the native fast paths); otherwise everything is `data`.
 * - Invariants: a RAW image is a standalone image or the base of a stack, never a layer above.
 *   Where the file system can deallocate (fallocate), `discard` and `zero` punch holes (zeros
 *   that take no space; NO_HOLE zeroes in place, staying allocated) and FAST_ZERO succeeds;
 *   otherwise `discard` keeps the bytes (it is a hint), `zero` writes zeros and FAST_ZERO is
 *   refused with ENOTSUP.
 */
import { InvalidBlockCountError, RequestError } from '../block/errors.js';
import { pushRun, type Run } from '../block/runs.js';
import type { BlockFile } from '../io/block-file.js';
import { openFdFile } from '../io/fd-file.js';
import { writeNewFile } from '../io/new-file.js';
import type { Layer, ParentPin, ZeroOptions, WriteOptions } from './layer.js';

/** Zeros are written in pieces of this size so a whole-disk WRITE_ZEROES needs little memory. */
const ZERO_PIECE = 1024 * 1024;

export const RAW_BLOCK_SIZE = 512;

export interface OpenRawOptions {
  readOnly?: boolean;
  /** Read-only: refuse a file that another program has open for writing (see io/image-lock.ts). */
  requireLock?: boolean;
  /**
   * Set when the format was probed rather than named: says which other format a first sector
   * would make the file look like (null: none). Such writes are refused, as QEMU refuses them,
   * so that a guest can never turn a probed RAW disk into something opened as another format.
   */
  headGuard?: (firstSector: Buffer) => string | null;
}

export async function openRaw(path: string, options: OpenRawOptions = {}): Promise<RawImage> {
  const file = await openFdFile(path, { readOnly: options.readOnly ?? false, requireLock: options.requireLock });
  try {
    return new RawImage(file, await file.size(), options.headGuard ?? null);
  } catch (err) {
    await file.close();
    throw err;
  }
}

/** Creates a sparse RAW image of `size` bytes. Refuses to replace a file unless `overwrite`. */
export async function createRaw(path: string, size: number, options: { overwrite?: boolean } = {}): Promise<void> {
  await writeNewFile(path, options.overwrite ?? false, async (file) => {
    try {
      await file.truncate(size);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EFBIG') throw err;
      throw new InvalidBlockCountError(path, `the file system cannot hold a file of ${size} bytes (EFBIG): choose a smaller size, or ASIF, whose files grow with the data`);
    }
    await file.sync();
  });
}

export class RawImage implements Layer {
  readonly format = 'raw' as const;
  readonly blockSize = RAW_BLOCK_SIZE;
  /** A file takes writes of any byte range: nothing to pad. */
  readonly requestAlignment = 1;
  readonly layerUUID = null;
  readonly parentUUID = null;
  readonly layerType = null;
  private zeros: Buffer | undefined;

  constructor(
    private readonly file: BlockFile,
    private currentSize: number,
    private readonly headGuard: ((firstSector: Buffer) => string | null) | null = null,
  ) {}

  get path(): string {
    return this.file.path;
  }

  get readOnly(): boolean {
    return this.file.readOnly;
  }

  get size(): number {
    return this.currentSize;
  }

  /** Size, modification time and inode: any write, resize or replacement changes one of them. */
  async pin(): Promise<ParentPin> {
    const st = await this.file.stat?.();
    return st ? { size: this.currentSize, mtime: st.mtimeNs, inode: st.inode } : { size: this.currentSize };
  }

  async map(offset: number, length: number, maxRuns?: number): Promise<Run[]> {
    if (length <= 0) return [];
    // Each extent costs two lseeks; a caller that needs only a few is not made to pay for all.
    const extents = this.file.holes?.(offset, length, maxRuns);
    if (!extents) return [{ offset, length, state: 'data' }];
    const runs: Run[] = [];
    for (const e of extents) pushRun(runs, e.offset, e.length, e.hole ? 'zero' : 'data');
    return runs;
  }

  read(buf: Buffer, offset: number): Promise<void> {
    return this.file.read(buf, offset);
  }

  async write(buf: Buffer, offset: number, options?: WriteOptions): Promise<void> {
    if (this.headGuard && offset < RAW_BLOCK_SIZE) await this.guardFirstSector(buf, offset);
    await this.file.write(buf, offset);
    if (options?.fua) await this.file.sync();
  }

  /** Refuses a write that would leave another format's magic in the first sector. */
  private async guardFirstSector(buf: Buffer, offset: number): Promise<void> {
    const sector = Buffer.alloc(Math.min(RAW_BLOCK_SIZE, this.currentSize));
    const end = offset + buf.length;
    // Only the bytes the write leaves alone need reading.
    if (offset > 0 || end < sector.length) await this.file.read(sector, 0);
    buf.copy(sector, offset, 0, Math.min(buf.length, sector.length - offset));
    const magic = this.headGuard?.(sector);
    if (magic) {
      throw new RequestError(
        'EPERM',
        `${this.path}: a ${magic} header in the first sector of an image whose format was probed as RAW is refused (it would open as ${magic} next time); name the format with -f raw to allow it`,
      );
    }
  }

  async zero(offset: number, length: number, options?: ZeroOptions): Promise<void> {
    const done = options?.noHole ? await this.file.zeroRange?.(offset, length) : await this.file.punchHole?.(offset, length);
    if (done) {
      if (options?.fua) await this.file.sync();
      return;
    }
    if (options?.fast) throw new RequestError('ENOTSUP', 'this file system cannot zero a RAW image faster than writing zeros');
    const zeros = (this.zeros ??= Buffer.alloc(ZERO_PIECE));
    for (let done = 0; done < length; done += ZERO_PIECE) {
      const n = Math.min(ZERO_PIECE, length - done);
      await this.file.write(zeros.subarray(0, n), offset + done);
    }
    if (options?.fua) await this.file.sync();
  }

  async discard(offset: number, length: number, options?: WriteOptions): Promise<void> {
    // Where holes cannot be punched, a discard is a hint that keeps the bytes.
    await this.file.punchHole?.(offset, length);
    if (options?.fua) await this.file.sync();
  }

  flush(): Promise<void> {
    return this.file.sync();
  }

  async truncate(size: number): Promise<void> {
    await this.file.truncate(size);
    this.currentSize = size;
  }

  async close(): Promise<void> {
    try {
      if (!this.readOnly) await this.file.sync();
    } finally {
      await this.file.close();
    }
  }
}
