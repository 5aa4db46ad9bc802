/**
 * A qcow2 image's backing file: which names are followed, how its format is chosen, and the
 * limits of a chain. The chain is composed inside the qcow2 layer, so to a stack the whole
 * chain is one read-only base.
 *
 * Rules:
 * - The name is a file path: relative names are taken from the directory of the image that
 *   names them, absolute ones as they are. Refused (UnsupportedFormatError): `json:` pseudo
 *   paths and anything with a `:` before its first `/` (QEMU's protocol prefixes: `nbd:`,
 *   `http:`, `file:`, ...; a local name with a colon can be written `./a:b`).
 * - The file must exist; a missing one is IncompatibleStackingError naming both files.
 * - The format comes from the backing format header extension when there is one (`raw` or
 *   `qcow2`; others are refused); otherwise the file's first bytes decide (qcow2 magic, else
 *   raw), as QEMU does for old images without the extension.
 * - At most MAX_BACKING_DEPTH backing files below the top image; a file that is already in the
 *   chain (same device and inode) is a loop. Both are IncompatibleStackingError.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { IncompatibleStackingError, UnsupportedFormatError } from '../../block/errors.js';
import type { Layer } from '../layer.js';
import { openRaw } from '../raw.js';
import { QCOW2_MAGIC } from './header.js';

export const MAX_BACKING_DEPTH = 16;

export type BackingFormat = 'raw' | 'qcow2';

/** One backing file, as named in its child's header and as opened. */
export interface BackingLink {
  /** The name stored in the child's header. */
  readonly name: string;
  /** The path it was opened from. */
  readonly path: string;
  readonly format: BackingFormat;
  /** Where the format came from: the header extension, or the file's first bytes. */
  readonly formatFrom: 'header' | 'probe';
}

/** What a chain opened so far holds: how many backing files lie above, and who is in it. */
export interface ChainContext {
  /** 0 for the top image, 1 for its backing file, ... */
  readonly depth: number;
  /** `device:inode` of every file opened in the chain so far. */
  readonly seen: ReadonlySet<string>;
}

/** Opens a qcow2 backing file in the given chain (index.ts passes its own opener). */
export type OpenQcow2Backing = (path: string, chain: ChainContext) => Promise<Layer>;

export function fileKey(device: number, inode: number): string {
  return `${device}:${inode}`;
}

/** The path a backing file name stands for, or UnsupportedFormatError for names that are not plain paths. */
export function resolveBackingName(imagePath: string, name: string): string {
  if (name.startsWith('json:')) throw new UnsupportedFormatError(imagePath, `backing file ${name} is a json: pseudo-path, which is not followed`);
  const colon = name.indexOf(':');
  const slash = name.indexOf('/');
  if (colon >= 0 && (slash < 0 || colon < slash)) {
    throw new UnsupportedFormatError(imagePath, `backing file ${name} names a protocol (${name.slice(0, colon)}:), which is not followed; only file paths are`);
  }
  return path.isAbsolute(name) ? name : path.resolve(path.dirname(imagePath), name);
}

async function probeBackingFormat(file: string): Promise<BackingFormat> {
  const handle = await fs.open(file, 'r');
  try {
    const head = Buffer.alloc(4);
    const { bytesRead } = await handle.read(head, 0, 4, 0);
    return bytesRead === 4 && head.readUInt32BE(0) === QCOW2_MAGIC ? 'qcow2' : 'raw';
  } finally {
    await handle.close();
  }
}

export async function openBacking(
  imagePath: string,
  name: string,
  headerFormat: string | null,
  chain: ChainContext,
  openQcow2Backing: OpenQcow2Backing,
): Promise<{ layer: Layer; link: BackingLink }> {
  const target = resolveBackingName(imagePath, name);
  const depth = chain.depth + 1;
  if (depth > MAX_BACKING_DEPTH) {
    throw new IncompatibleStackingError(imagePath, `the backing chain is deeper than ${MAX_BACKING_DEPTH} files (at ${name})`);
  }
  if (headerFormat !== null && headerFormat !== 'raw' && headerFormat !== 'qcow2') {
    throw new UnsupportedFormatError(imagePath, `backing file ${name} has format ${headerFormat}, which is not supported (raw or qcow2)`);
  }
  const st = await fs.stat(target).catch((err: NodeJS.ErrnoException) => {
    const why = err.code === 'ENOENT' ? 'does not exist' : `cannot be read (${err.code ?? err.message})`;
    throw new IncompatibleStackingError(imagePath, `backing file ${name} (${target}) ${why}`);
  });
  if (!st.isFile() && !st.isBlockDevice()) throw new IncompatibleStackingError(imagePath, `backing file ${name} (${target}) is not a file`);
  const key = fileKey(st.dev, st.ino);
  if (chain.seen.has(key)) throw new IncompatibleStackingError(imagePath, `the backing chain loops: ${name} (${target}) is already in it`);
  const format = (headerFormat as BackingFormat | null) ?? (await probeBackingFormat(target));
  const next: ChainContext = { depth, seen: new Set([...chain.seen, key]) };
  const layer = format === 'qcow2' ? await openQcow2Backing(target, next) : await openRaw(target, { readOnly: true });
  return { layer, link: { name, path: target, format, formatFrom: headerFormat === null ? 'probe' : 'header' } };
}
