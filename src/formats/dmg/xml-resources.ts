/**
 * The XML property list of a UDIF image (spec/udif.md §3): `resource-fork` → `blkx` → an
 * array of dicts, each holding one mish table (`Data`, base64) and the partition's `Name` and
 * `ID`. Other resources (`plst`, `cSum`, `nsiz`, ...) are ignored.
 *
 * - The text must be UTF-8 and pass xml-guard.ts (the ASIF metadata's guard) before the plist
 *   package parses it: that package prints its XML parser's complaints to the console.
 * - A plist without blkx entries, or an entry without Data, is a corrupted image.
 */
import { parse, type PlistValue } from 'plist';
import { CorruptedImageError } from '../../block/errors.js';
import { xmlProblem } from '../asif/xml-guard.js';

/** One blkx resource: a partition's mish table and how the image names it. */
export interface BlkxResource {
  name: string;
  /** hdiutil numbers partitions −1, 0, 1, ...; null when missing or not a number. */
  id: number | null;
  data: Buffer;
}

type PlistDict = { [key: string]: PlistValue };

function isDict(value: PlistValue | undefined): value is PlistDict {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date) && !(value instanceof Uint8Array);
}

function idOf(value: PlistValue | undefined): number | null {
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^-?\d+$/.test(value.trim()) ? Number(value) : NaN;
  return Number.isSafeInteger(n) ? n : null;
}

export function parseXmlResources(bytes: Buffer, file: string): BlkxResource[] {
  const fail = (detail: string): never => {
    throw new CorruptedImageError(file, `the XML property list ${detail}`);
  };
  let text = '';
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    fail('is not valid UTF-8');
  }
  const problem = xmlProblem(text);
  if (problem) fail(`is not well-formed XML (${problem})`);
  let plist: PlistValue = null;
  try {
    plist = parse(text);
  } catch (err) {
    fail(`does not parse (${(err as Error).message.split('\n')[0]})`);
  }
  const fork = isDict(plist) ? plist['resource-fork'] : undefined;
  const blkx = isDict(fork) ? fork.blkx : undefined;
  if (!Array.isArray(blkx) || blkx.length === 0) return fail("has no 'resource-fork' → 'blkx' entries");
  return blkx.map((entry, i) => {
    if (!isDict(entry) || !(entry.Data instanceof Uint8Array)) return fail(`blkx entry ${i} has no Data`);
    const name = typeof entry.Name === 'string' ? entry.Name : typeof entry.CFName === 'string' ? entry.CFName : '';
    return { name, id: idOf(entry.ID), data: Buffer.from(entry.Data.buffer, entry.Data.byteOffset, entry.Data.byteLength) };
  });
}
