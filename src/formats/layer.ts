/**
 * The contract every image format implements: one file, answering only for its own
 * allocation. A format never reads another layer; the stack (src/stack/) composes them.
 *
 * Offsets and lengths are bytes. Callers keep requests inside `size`. `write`, `zero` and
 * `discard` may be given ranges that are not whole blocks; a format then handles the partial
 * blocks itself as if nothing lay below it (the stack, which knows better, always hands a
 * layer whole blocks when something lies below).
 */
import type { Run } from '../block/runs.js';

export type ImageFormat = 'raw' | 'asif';
export type LayerType = 'cache' | 'overlay';

export interface WriteOptions {
  /** Force unit access: the write (and the map change it needs) is durable when it resolves. */
  fua?: boolean;
}

export interface ZeroOptions extends WriteOptions {
  /** Keep the range allocated (write real zeros) instead of marking it as a hole. */
  noHole?: boolean;
  /**
   * Succeed only if zeroing is cheap (a map change). Otherwise reject at once with
   * RequestError('ENOTSUP') and change nothing.
   */
  fast?: boolean;
}

export interface Layer {
  readonly path: string;
  readonly format: ImageFormat;
  /** Sector size: 512 or 4096 for ASIF, 512 for RAW. */
  readonly blockSize: number;
  /** Virtual size in bytes: block count × block size. */
  readonly size: number;
  readonly readOnly: boolean;
  /** Lowercase RFC 4122 string; null for RAW. */
  readonly layerUUID: string | null;
  /** The layer UUID of the layer below; null when standalone or above a RAW base. */
  readonly parentUUID: string | null;
  readonly layerType: LayerType | null;

  /**
   * Runs covering exactly [offset, offset + length), in order, merged where they touch. With
   * `maxRuns`, a layer whose map is costly to walk may stop after that many runs: the runs then
   * cover a prefix [offset, offset + n) with n > 0.
   */
  map(offset: number, length: number, maxRuns?: number): Promise<Run[]>;
  /**
   * Fills `buf` with this layer's bytes at `offset`. Ranges the layer reports as `zero` or
   * `absent` read as zeros.
   */
  read(buf: Buffer, offset: number): Promise<void>;
  write(buf: Buffer, offset: number, options?: WriteOptions): Promise<void>;
  /** Afterwards the range reads as zeros from this layer and hides everything below it. */
  zero(offset: number, length: number, options?: ZeroOptions): Promise<void>;
  /**
   * A hint that the range is no longer needed. Whole allocation units may be released (they
   * then read as zeros, never as the layer below); partial ones may keep their data.
   */
  discard(offset: number, length: number, options?: WriteOptions): Promise<void>;
  /** Makes every completed write, and the map that references it, durable. */
  flush(): Promise<void>;
  /** Changes the virtual size; bytes past a smaller size are dropped and read as zeros if regrown. */
  truncate(size: number): Promise<void>;
  /** Flushes, then releases the file. */
  close(): Promise<void>;
}
