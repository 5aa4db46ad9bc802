/**
 * A sparse bundle's Info.plist (spec/udif.md §9): an XML property list whose dict says the
 * band size and the virtual size. Info.bckup is the same plist, kept by macOS as a backup: it
 * is read when Info.plist is missing or does not parse.
 *
 * Checks: the text is UTF-8 and well-formed XML (xml-guard, before the plist parser, which
 * would print its complaints); the root is a dict; `diskimage-bundle-type` is
 * `com.apple.diskimage.sparsebundle`; `band-size` a positive whole number; `size` a whole
 * number ≥ 0; `bundle-backingstore-version` 1 or 2 (image.ts says what 2 may hold). A file over
 * MAX_PLIST_BYTES is refused unread (an Info.plist is a few hundred bytes).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { parse, type PlistValue } from 'plist';
import { CorruptedImageError, ImageError, UnsupportedFormatError } from '../../block/errors.js';
import { xmlProblem } from '../asif/xml-guard.js';

export const BUNDLE_TYPE = 'com.apple.diskimage.sparsebundle';
const MAX_PLIST_BYTES = 64 * 1024;

export interface BundleInfo {
  readonly bandSize: number;
  /** Virtual disk size in bytes, as the plist says it. */
  readonly size: number;
  readonly backingStoreVersion: 1 | 2;
  /** Which file it was read from: 'Info.plist', or 'Info.bckup' when Info.plist could not be. */
  readonly source: 'Info.plist' | 'Info.bckup';
}

type PlistDict = { [key: string]: PlistValue };

function isDict(value: PlistValue): value is PlistDict {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date) && !(value instanceof Uint8Array);
}

function wholeNumber(dict: PlistDict, key: string, file: string, min: number): number {
  const value = dict[key];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new CorruptedImageError(file, `${key} is ${JSON.stringify(value) ?? 'missing'}, not a whole number of at least ${min}`);
  }
  return value;
}

/** Parses one plist file's text into what the bundle needs; every problem names `file`. */
export function parseBundleInfo(bytes: Buffer, file: string, source: BundleInfo['source']): BundleInfo {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new CorruptedImageError(file, 'the property list is not valid UTF-8');
  }
  const problem = xmlProblem(text);
  if (problem) throw new CorruptedImageError(file, `the property list is not well-formed XML (${problem})`);
  let root: PlistValue;
  try {
    root = parse(text);
  } catch (err) {
    throw new CorruptedImageError(file, `the property list does not parse (${(err as Error).message.split('\n')[0]})`);
  }
  if (!isDict(root)) throw new CorruptedImageError(file, 'the property list is not a dict');
  const type = root['diskimage-bundle-type'];
  if (type !== BUNDLE_TYPE) throw new UnsupportedFormatError(file, `diskimage-bundle-type is ${JSON.stringify(type) ?? 'missing'}, not ${BUNDLE_TYPE}`);
  const version = root['bundle-backingstore-version'];
  if (version !== 1 && version !== 2) throw new UnsupportedFormatError(file, `bundle-backingstore-version ${JSON.stringify(version) ?? 'missing'} is not supported (1 or 2)`);
  return { bandSize: wholeNumber(root, 'band-size', file, 1), size: wholeNumber(root, 'size', file, 0), backingStoreVersion: version, source };
}

async function readPlist(file: string): Promise<Buffer> {
  const st = await fs.stat(file);
  if (!st.isFile()) throw new CorruptedImageError(file, 'is not a file');
  if (st.size > MAX_PLIST_BYTES) throw new CorruptedImageError(file, `has ${st.size} bytes, too many for a property list of a sparse bundle`);
  return fs.readFile(file);
}

/** Info.plist, or Info.bckup when Info.plist is missing or broken; the Info.plist error when neither will do. */
export async function loadBundleInfo(bundle: string): Promise<BundleInfo> {
  const main = path.join(bundle, 'Info.plist');
  let mainError: unknown;
  try {
    return parseBundleInfo(await readPlist(main), main, 'Info.plist');
  } catch (err) {
    if (!(err instanceof CorruptedImageError) && (err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    mainError = err;
  }
  const backup = path.join(bundle, 'Info.bckup');
  try {
    return parseBundleInfo(await readPlist(backup), backup, 'Info.bckup');
  } catch (err) {
    // Info.plist's own problem says more than its backup's.
    if (mainError instanceof ImageError) throw mainError;
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new CorruptedImageError(bundle, 'has no Info.plist (nor Info.bckup)');
    throw err;
  }
}
