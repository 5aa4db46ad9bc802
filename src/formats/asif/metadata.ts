/**
 * The metadata chunk (spec §8, §10): logical chunk `metadata chunk`, read through the map.
 *
 * - Stores: a 0x200-byte `meta` header (magic, version 1, header size 0x200, 0, 0x200), then an
 *   XML property list padded with NUL bytes: `internal metadata` → `stable uuid` (and, ours, an
 *   optional `layer type` of `cache` or `overlay`), plus a `user metadata` dict.
 * - States: absent `layer type` = standalone image; `cache` / `overlay` = a layer. A layer whose
 *   parent is not ASIF (RAW, foreign or remote) records what identifies that parent (its pin,
 *   see ParentPin in ../layer.ts) under `user metadata` → `com.stackbd.parent`: a key of ours
 *   where DiskImageKit keeps user keys, so Apple's tools read the image as before. A cache
 *   layer may record the most bytes of data it keeps, `com.stackbd.cache-limit` (an integer).
 * - Invariants: the plist we write has Apple's exact shape (tab indents, top-level dict not
 *   indented, trailing newline), so a standalone image is byte-compatible with Apple's blank
 *   layout; keys we do not know are kept when we parse; text reaches the plist parser only
 *   after xml-guard.ts found it well-formed (the parser would print its complaints).
 */
import { isDeepStrictEqual } from 'node:util';
import { build, parse, type PlistValue } from 'plist';
import type { LayerType, ParentPin } from '../layer.js';
import { META_HEADER_BYTES, META_MAGIC, META_VERSION } from './layout.js';
import { hex, type ProblemSink } from './problems.js';
import { xmlProblem } from './xml-guard.js';

type PlistDict = { [key: string]: PlistValue };

/** The user metadata key under which a layer records its non-ASIF parent's pin. */
export const PARENT_PIN_KEY = 'com.stackbd.parent';
/** The user metadata key under which a cache layer records the most bytes of data it keeps. */
export const CACHE_LIMIT_KEY = 'com.stackbd.cache-limit';

export interface AsifMetadata {
  readonly stableUUID: string;
  readonly layerType: LayerType | null;
  /** What identifies the parent, for a layer over a RAW, foreign or remote base; null otherwise. */
  readonly parentPin: ParentPin | null;
  /** A cache layer's bound on its data, in bytes; null when unbounded. */
  readonly cacheLimit: number | null;
  /** The whole parsed plist, kept as read. */
  readonly plist: PlistDict;
}

export interface NewMetadata {
  readonly stableUUID: string;
  readonly layerType: LayerType | null;
  readonly parentPin?: ParentPin | null;
  readonly cacheLimit?: number | null;
  /** The plist of an existing image, whose other keys are kept (rebase rewrites the pin). */
  readonly keep?: PlistDict;
}

/** The bytes at the start of a metadata chunk: the `meta` header and the plist. */
export function encodeMetadata(meta: NewMetadata): Buffer {
  const kept = meta.keep ?? {};
  const internal: PlistDict = isDict(kept['internal metadata']) ? { ...kept['internal metadata'] } : {};
  const user: PlistDict = isDict(kept['user metadata']) ? { ...kept['user metadata'] } : {};
  delete internal['layer type'];
  if (meta.layerType) internal['layer type'] = meta.layerType;
  internal['stable uuid'] = meta.stableUUID;
  delete user[PARENT_PIN_KEY];
  if (meta.parentPin) user[PARENT_PIN_KEY] = { ...meta.parentPin };
  delete user[CACHE_LIMIT_KEY];
  if (meta.cacheLimit) user[CACHE_LIMIT_KEY] = meta.cacheLimit;
  // Keys in sorted order, as Apple's property list writer emits them.
  const plist: PlistDict = { ...kept, 'internal metadata': sortedKeys(internal), 'user metadata': sortedKeys(user) };
  const text = Buffer.from(applePlistText(sortedKeys(plist)), 'utf8');
  const header = Buffer.alloc(META_HEADER_BYTES);
  header.writeUInt32BE(META_MAGIC, 0);
  header.writeUInt32BE(META_VERSION, 4);
  header.writeUInt32BE(META_HEADER_BYTES, 8);
  header.writeUInt32BE(META_HEADER_BYTES, 16);
  return Buffer.concat([header, text]);
}

/**
 * Apple's layout of an XML plist: the plist package indents the top-level dict one level
 * deeper than Apple does and leaves out the final newline. The shift is undone line by line;
 * if that could change a value (a multi-line string), the package's own text is used.
 */
function applePlistText(value: PlistDict): string {
  const plain = build(value, { pretty: true, indent: '\t', newline: '\n' });
  const lines = plain.split('\n');
  const open = lines.findIndex((l) => l.startsWith('<plist'));
  const shifted = lines.map((l, i) => (i > open && l.startsWith('\t') ? l.slice(1) : l)).join('\n') + '\n';
  return isDeepStrictEqual(parse(shifted), value) ? shifted : plain + '\n';
}

/** Decodes the metadata chunk's bytes; null (after telling the sink) when they are unusable. */
export function decodeMetadata(chunk: Buffer, where: string, sink: ProblemSink): AsifMetadata | null {
  if (chunk.length < 20 || chunk.readUInt32BE(0) !== META_MAGIC) {
    sink.corrupt(`${where}: no 'meta' header`);
    return null;
  }
  const version = chunk.readUInt32BE(4);
  if (version !== META_VERSION) {
    sink.unsupported(`${where}: metadata version ${version} is not supported`);
    return null;
  }
  const start = chunk.readUInt32BE(8);
  if (start < 20 || start >= chunk.length) {
    sink.corrupt(`${where}: metadata header size ${hex(start)} is out of range`);
    return null;
  }
  const nul = chunk.indexOf(0, start);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(chunk.subarray(start, nul < 0 ? chunk.length : nul));
  } catch {
    sink.corrupt(`${where}: the property list is not valid UTF-8`);
    return null;
  }
  const problem = xmlProblem(text);
  if (problem) {
    sink.corrupt(`${where}: the property list is not well-formed XML (${problem})`);
    return null;
  }
  let plist: PlistValue;
  try {
    plist = parse(text);
  } catch (err) {
    sink.corrupt(`${where}: the property list does not parse (${(err as Error).message.split('\n')[0]})`);
    return null;
  }
  const internal = isDict(plist) ? plist['internal metadata'] : undefined;
  const stableUUID = isDict(internal) ? internal['stable uuid'] : undefined;
  if (!isDict(plist) || !isDict(internal) || typeof stableUUID !== 'string') {
    sink.corrupt(`${where}: the property list has no 'internal metadata' → 'stable uuid' string`);
    return null;
  }
  const layerType = internal['layer type'];
  if (layerType !== undefined && layerType !== 'cache' && layerType !== 'overlay') {
    sink.unsupported(`${where}: unknown layer type ${JSON.stringify(layerType)}`);
    return null;
  }
  const user = plist['user metadata'];
  const recorded = isDict(user) ? user[PARENT_PIN_KEY] : undefined;
  let parentPin: ParentPin | null = null;
  if (recorded !== undefined) {
    parentPin = pinOf(recorded);
    if (!parentPin) {
      sink.corrupt(`${where}: 'user metadata' → '${PARENT_PIN_KEY}' is not a dictionary of strings and numbers`);
      return null;
    }
  }
  const limit = isDict(user) ? user[CACHE_LIMIT_KEY] : undefined;
  if (limit !== undefined && (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit <= 0)) {
    sink.corrupt(`${where}: 'user metadata' → '${CACHE_LIMIT_KEY}' is not a positive whole number of bytes`);
    return null;
  }
  return { stableUUID, layerType: layerType ?? null, parentPin, cacheLimit: limit ?? null, plist };
}

function pinOf(value: PlistValue): ParentPin | null {
  if (!isDict(value) || Object.keys(value).length === 0) return null;
  const pin: Record<string, string | number> = {};
  for (const [key, v] of Object.entries(value)) {
    if (typeof v !== 'string' && typeof v !== 'number') return null;
    pin[key] = v;
  }
  return pin;
}

function sortedKeys(dict: PlistDict): PlistDict {
  return Object.fromEntries(Object.keys(dict).sort().map((k) => [k, dict[k]]));
}

function isDict(value: PlistValue | undefined): value is PlistDict {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date) && !(value instanceof Uint8Array);
}
