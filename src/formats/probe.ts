/**
 * Which format a file (or directory) holds, by its content: the first and last bytes of a file
 * against each entry of the format table, the layout of a directory. A file no entry
 * recognises is RAW (a raw disk has no magic of its own); a directory no entry recognises is
 * refused. `checkNameAgainstContent` then refuses a file whose name promises another format
 * than its content shows (an ASIF whose header was damaged must not be served as a RAW disk).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { ImageError, UnsupportedFormatError } from '../block/errors.js';
import { openFdFile } from '../io/fd-file.js';
import { FORMAT_TABLE, RAW_ENTRY } from './format-table.js';
import type { ImageFormat } from './layer.js';
import { PROBE_HEAD_BYTES, PROBE_TAIL_BYTES, type FormatEntry, type ProbeInput } from './registry.js';

/** Reads what probing needs; a missing path or one that is neither file nor directory is an ImageError. */
async function probeInput(file: string): Promise<ProbeInput> {
  const st = await fs.stat(file).catch((err: NodeJS.ErrnoException) => {
    throw new ImageError(file, err.code === 'ENOENT' ? 'no such file or directory' : `cannot be read (${err.code ?? err.message})`);
  });
  if (st.isDirectory()) {
    return { path: file, size: 0, head: Buffer.alloc(0), tail: Buffer.alloc(0), entries: await fs.readdir(file) };
  }
  if (!st.isFile() && !st.isBlockDevice()) throw new ImageError(file, 'is not a regular file or a directory');
  const handle = await openFdFile(file, { readOnly: true, noLock: true });
  try {
    const size = await handle.size();
    const head = Buffer.alloc(Math.min(PROBE_HEAD_BYTES, size));
    await handle.read(head, 0);
    const tail = Buffer.alloc(Math.min(PROBE_TAIL_BYTES, size));
    await handle.read(tail, size - tail.length);
    return { path: file, size, head, tail, entries: null };
  } finally {
    await handle.close();
  }
}

/** The entry of the format the content shows (RAW for a file nothing recognises). */
export async function probeEntry(file: string): Promise<FormatEntry> {
  const input = await probeInput(file);
  const found = FORMAT_TABLE.find((f) => f.detect(input));
  if (found) return found;
  if (input.entries !== null) throw new ImageError(file, 'is a directory, not a disk image (nor a sparse bundle)');
  return RAW_ENTRY;
}

/** The format the content shows; formats stackbd does not read are refused by name. */
export async function probeFormat(file: string): Promise<ImageFormat> {
  const entry = await probeEntry(file);
  if (!entry.open) throw new UnsupportedFormatError(file, `this is a ${entry.label} image, which stackbd does not read`);
  return entry.name as ImageFormat;
}

/** The entry whose name is `name` (RAW included). */
export function formatEntry(name: string): FormatEntry | undefined {
  return name === RAW_ENTRY.name ? RAW_ENTRY : FORMAT_TABLE.find((f) => f.name === name);
}

/** The entry a file name promises by its ending, if any. */
export function formatByName(file: string): FormatEntry | undefined {
  const ext = path.extname(file.replace(/\/+$/, '')).toLowerCase();
  if (!ext) return undefined;
  return [RAW_ENTRY, ...FORMAT_TABLE].find((f) => f.extensions.includes(ext));
}

/** Refuses a probed format that the file's name contradicts (`disk.asif` holding no ASIF header). */
export function checkNameAgainstContent(file: string, probed: FormatEntry): void {
  const named = formatByName(file);
  if (!named || named === probed) return;
  const content = probed === RAW_ENTRY ? `it has no ${named.label} header and would read as RAW` : `it is ${probed.label}`;
  throw new UnsupportedFormatError(
    file,
    `the name says ${named.label} but the content does not match (${content}); the file may be damaged. If it really is ${probed.label}, rename it or pass -f ${probed.name}`,
  );
}
