/**
 * Positional file access for images. Everything above this file reads and writes whole
 * buffers at byte positions and asks for a data sync; nothing else. Keeping the seam this
 * narrow lets tests put a recorder under an image (every write and sync in order) to replay
 * crashes, and lets a faster backend replace the plain one without touching the formats.
 */
export interface BlockFile {
  readonly path: string;
  readonly readOnly: boolean;
  /** Fills `buf` with the bytes at `position`; bytes past the end of the file read as zeros. */
  read(buf: Uint8Array, position: number): Promise<void>;
  /** Writes all of `buf` at `position`, growing the file when needed. */
  write(buf: Uint8Array, position: number): Promise<void>;
  /** Makes every completed write durable (fdatasync). */
  sync(): Promise<void>;
  /** Current length of the file in bytes. */
  size(): Promise<number>;
  /** Who the file is and when it last changed (files in memory, in tests, have no answer). */
  stat?(): Promise<FileIdentity>;
  /** Sets the length of the file; growing leaves a sparse tail that reads as zeros. */
  truncate(length: number): Promise<void>;
  close(): Promise<void>;
  /**
   * Where the file holds data and where it has holes, in [offset, offset + length), in order;
   * null when the file system or platform cannot tell (then treat everything as data). With
   * `maxExtents`, the answer may stop after that many extents and cover only a prefix.
   */
  holes?(offset: number, length: number, maxExtents?: number): FileExtent[] | null;
  /** Deallocates the range (it then reads as zeros). False when the file system cannot. */
  punchHole?(offset: number, length: number): Promise<boolean>;
  /** Makes the range read as zeros and stay allocated. False when the file system cannot. */
  zeroRange?(offset: number, length: number): Promise<boolean>;
}

/** What tells one file, and one version of its content, from another. */
export interface FileIdentity {
  size: number;
  /** Modification time in nanoseconds since the epoch, as a decimal string (exact). */
  mtimeNs: string;
  inode: number;
  device: number;
}

/** A part of a file: data, or a hole (reads as zeros, takes no space). */
export interface FileExtent {
  offset: number;
  length: number;
  hole: boolean;
}

/** How a file is opened: `create` makes a new file and fails if one exists, unless `overwrite`. */
export interface OpenFileOptions {
  readOnly?: boolean;
  create?: boolean;
  overwrite?: boolean;
}
