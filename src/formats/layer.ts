/**
 * The contract every image format implements: one file, answering only for its own
 * allocation. A format never reads another layer; the stack (src/stack/) composes them.
 *
 * Offsets and lengths are bytes. Callers keep requests inside `size`. `write`, `zero` and
 * `discard` take ranges in whole units of the layer's `requestAlignment`; the stack pads
 * every other request (src/stack/stack.ts), so formats never read-modify-write.
 */
import type { Run } from '../block/runs.js';

/** Formats of image files (a sparse bundle is a directory). */
export type ImageFormat = 'raw' | 'asif' | 'dmg' | 'qcow2' | 'sparsebundle';
/** The formats stackbd creates and writes; the others are read-only bases. */
export type WritableFormat = 'raw' | 'asif';
/** Bases read from elsewhere (src/remote/): an HTTP(S) object, an S3 object, an NBD export. */
export type RemoteKind = 'http' | 's3' | 'nbd';
/** What a layer is read from: an image format, or a remote source. */
export type LayerFormat = ImageFormat | RemoteKind;
export type LayerType = 'cache' | 'overlay';

/**
 * How a child recognises a parent that has no ASIF layer UUID (RAW, foreign and remote bases):
 * named fields the child records when it is made and compares when it is opened, e.g.
 * `{ size, mtime, inode }` for a file or `{ size, etag }` for an HTTP object. Every recorded
 * field must equal the parent's current one; a layer chooses fields that change whenever its
 * content may have changed. ASIF parents are recognised by their layer UUID instead.
 */
export type ParentPin = Readonly<Record<string, string | number>>;

/** Format-specific facts for `stackbd info --json` (codecs, compressed size, backing file...). */
export type LayerDetails = Readonly<Record<string, unknown>>;

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
  /** The file, directory or URL (with any secret left out) the layer is read from. */
  readonly path: string;
  readonly format: LayerFormat;
  /** Sector size: 512 or 4096 for ASIF, 512 for RAW. */
  readonly blockSize: number;
  /**
   * The unit `write`, `zero` and `discard` take ranges in (QEMU's request_alignment); the
   * stack pads to it (read-modify-write through the layers below) and nothing else does.
   * Absent: `blockSize`. A RAW file takes any byte range: 1.
   */
  readonly requestAlignment?: number;
  /** Virtual size in bytes: block count × block size. */
  readonly size: number;
  readonly readOnly: boolean;
  /** Lowercase RFC 4122 string; null for RAW. */
  readonly layerUUID: string | null;
  /** The layer UUID of the layer below; null when standalone or above a RAW base. */
  readonly parentUUID: string | null;
  readonly layerType: LayerType | null;
  /**
   * What this layer recorded of a parent that has no ASIF layer UUID (RAW, foreign, remote),
   * checked against that parent's `pin()` when stacked; null or absent when it recorded none.
   */
  readonly parentPin?: ParentPin | null;

  /**
   * What a child must record to recognise this layer as its parent, read now (a RAW file's
   * size and modification time change as it is written); null for ASIF layers, which children
   * recognise by `layerUUID`.
   */
  pin(): Promise<ParentPin | null>;
  /** Facts beyond the contract's, for `info --json`; formats with nothing to add leave it out. */
  details?(): Promise<LayerDetails>;

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
  /**
   * `map` and `read` in one lookup, for layers whose map can change while they are read (a
   * bounded cache gives chunks up): reads the data runs into `buf`, fills the zero runs with
   * zeros, leaves the absent runs as they were, and returns the runs as `map` would.
   */
  readRuns?(buf: Buffer, offset: number): Promise<Run[]>;
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
