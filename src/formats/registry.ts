/**
 * Every image format stackbd recognises, in one table: how its files are told apart (magic
 * bytes, or a directory's layout), which file name endings promise it, and how to open it.
 * Probing, the check of a name against the content, and opening all read this table, so a new
 * format is one entry here. Formats without `open` are recognised only to be refused by name,
 * so that their bytes are never served as if they were a raw disk.
 */
import type { ImageFormat, Layer } from './layer.js';

/** What probing looks at: the first and last bytes of a file, or a directory's entries. */
export interface ProbeInput {
  readonly path: string;
  readonly size: number;
  /** Up to PROBE_HEAD_BYTES from byte 0 (empty for a directory). */
  readonly head: Buffer;
  /** Up to PROBE_TAIL_BYTES ending at the end of the file (empty for a directory). */
  readonly tail: Buffer;
  /** The names inside, for a directory; null for a file. */
  readonly entries: readonly string[] | null;
}

export const PROBE_HEAD_BYTES = 4096;
export const PROBE_TAIL_BYTES = 512;

export interface OpenFormatOptions {
  readOnly: boolean;
  /** The format was probed, not named by the user (RAW then refuses to write a known magic into its first sector). */
  probed: boolean;
  /** Read-only: refuse a file another program has open for writing, instead of reading it unlocked. */
  requireLock?: boolean;
  /** A cache layer's bound on its data in bytes, instead of the one it records (ASIF only). */
  cacheLimit?: number;
  /** Refuse an image that names a backing file (qcow2) instead of opening its chain. */
  noBacking?: boolean;
}

export interface FormatEntry {
  /** The name used by `-f` and in `info` (refused formats have names outside ImageFormat). */
  readonly name: ImageFormat | 'vmdk' | 'vhdx';
  /** How messages name it. */
  readonly label: string;
  /** File name endings (lowercase, with the dot) that promise this format. */
  readonly extensions: readonly string[];
  /** True when the probed bytes (or directory) are this format. RAW, the fallback, is not in the table. */
  detect(input: ProbeInput): boolean;
  /** Absent for formats stackbd does not read. */
  open?(path: string, options: OpenFormatOptions): Promise<Layer>;
}

export function startsWith(buf: Buffer, magic: Buffer | string, at = 0): boolean {
  const m = typeof magic === 'string' ? Buffer.from(magic, 'latin1') : magic;
  return buf.length >= at + m.length && buf.subarray(at, at + m.length).equals(m);
}
