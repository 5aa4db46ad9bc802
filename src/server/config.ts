/**
 * The `--config FILE` format: a JSON file of exports (and optionally listeners), validated with
 * errors that name the file and the field. Relative image paths are relative to the file.
 *
 * {
 *   "listen": ["127.0.0.1:10809"],            optional
 *   "socket": ["/run/stackbd.sock"],          optional
 *   "syncInterval": 5,                        optional, seconds
 *   "exports": [
 *     { "name": "vm", "layers": ["base.raw", "overlay.asif"], "readOnly": false, "description": "..." },
 *     { "name": "vm2", "layers": [{ "path": "disk.img", "format": "raw" }, "vm2.asif"] }
 *   ]
 * }
 * A layer is a path, a path with its format as a prefix ("raw:disk.img"), or an object with
 * "path" and "format"; either way the format skips probing (`-f` on the command line). The
 * base's object may say "noBacking": true (`--no-backing`: a qcow2 base that names a backing
 * file is refused instead of opening its chain).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { formatLayerSpec, IMAGE_FORMATS, parseLayerSpec } from '../stack/layer-spec.js';
import { isRemoteSource } from '../remote/source.js';

export interface ExportConfig {
  name: string;
  layers: string[];
  readOnly: boolean;
  description?: string;
  /** The base's object says `"noBacking": true`: a qcow2 base naming a backing file is refused. */
  noBacking?: boolean;
}

export interface ServerConfig {
  listen: string[];
  socket: string[];
  syncInterval?: number;
  exports: ExportConfig[];
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function isObject(v: Json | undefined): v is { [key: string]: Json } {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function stringList(v: Json | undefined, where: string, fail: (m: string) => never): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string' || s === '')) fail(`${where} must be a list of non-empty strings`);
  return v as string[];
}

/** Layers as `FORMAT:PATH` strings with paths made absolute (relative ones are relative to the
 * file), and whether the base's object asks for no backing file. */
function layerList(v: Json | undefined, where: string, dir: string, fail: (m: string) => never): { layers: string[]; noBacking: boolean } {
  if (!Array.isArray(v)) return fail(`${where} must be a list of images, bottom first`);
  let noBacking = false;
  const layers = v.map((item, i) => {
    const at = `${where}[${i}]`;
    let spec;
    if (typeof item === 'string' && item !== '') spec = parseLayerSpec(item);
    else if (isObject(item)) {
      for (const key of Object.keys(item)) if (!['path', 'format', 'noBacking'].includes(key)) fail(`${at}: unknown field "${key}" (expected path, format, noBacking)`);
      if (item.noBacking !== undefined && typeof item.noBacking !== 'boolean') fail(`${at}.noBacking must be true or false`);
      // Layers above the base are ASIF, which has no backing file.
      if (item.noBacking === true && i > 0) fail(`${at}.noBacking is for the base (${where}[0]): layers above it are ASIF, which have no backing file`);
      noBacking = noBacking || item.noBacking === true;
      if (typeof item.path !== 'string' || item.path === '') fail(`${at}.path must be a non-empty string`);
      const format = item.format;
      if (format !== undefined && !(IMAGE_FORMATS as readonly Json[]).includes(format)) fail(`${at}.format must be one of ${IMAGE_FORMATS.join(', ')}`);
      spec = { path: item.path as string, ...(format !== undefined ? { format: format as (typeof IMAGE_FORMATS)[number] } : {}) };
    } else return fail(`${at} must be a path or an object with "path" and "format"`);
    // URLs are kept as they are; only file paths are relative to the config file.
    return isRemoteSource(spec.path) ? formatLayerSpec(spec) : formatLayerSpec({ ...spec, path: path.resolve(dir, spec.path) });
  });
  return { layers, noBacking };
}

export function parseConfig(text: string, file: string): ServerConfig {
  const fail = (message: string): never => {
    throw new ConfigError(`${file}: ${message}`);
  };
  let root: Json;
  try {
    root = JSON.parse(text) as Json;
  } catch (err) {
    return fail(`not valid JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (!isObject(root)) return fail('the top level must be an object with an "exports" list');
  const known = new Set(['listen', 'socket', 'syncInterval', 'exports']);
  for (const key of Object.keys(root)) if (!known.has(key)) fail(`unknown field "${key}" (expected ${[...known].join(', ')})`);
  const dir = path.dirname(path.resolve(file));
  if (!Array.isArray(root.exports) || root.exports.length === 0) fail('"exports" must be a non-empty list');
  const names = new Set<string>();
  const exports = (root.exports as Json[]).map((entry, i): ExportConfig => {
    const where = `exports[${i}]`;
    if (!isObject(entry)) return fail(`${where} must be an object`);
    for (const key of Object.keys(entry)) {
      if (!['name', 'layers', 'readOnly', 'description'].includes(key)) fail(`${where}: unknown field "${key}"`);
    }
    if (typeof entry.name !== 'string') fail(`${where}.name must be a string ("" is the default export)`);
    const name = entry.name as string;
    if (names.has(name)) fail(`${where}: export "${name}" is defined twice`);
    names.add(name);
    const { layers, noBacking } = layerList(entry.layers, `${where}.layers`, dir, fail);
    if (layers.length === 0) fail(`${where}.layers must list at least one image (bottom first)`);
    if (entry.readOnly !== undefined && typeof entry.readOnly !== 'boolean') fail(`${where}.readOnly must be true or false`);
    if (entry.description !== undefined && typeof entry.description !== 'string') fail(`${where}.description must be a string`);
    return {
      name,
      layers,
      readOnly: entry.readOnly === true,
      ...(typeof entry.description === 'string' ? { description: entry.description } : {}),
      ...(noBacking ? { noBacking } : {}),
    };
  });
  const syncInterval = root.syncInterval;
  if (syncInterval !== undefined && (typeof syncInterval !== 'number' || !(syncInterval >= 0))) fail('"syncInterval" must be a number of seconds, 0 or more');
  return {
    listen: stringList(root.listen, '"listen"', fail),
    socket: stringList(root.socket, '"socket"', fail),
    ...(typeof syncInterval === 'number' ? { syncInterval } : {}),
    exports,
  };
}

export async function loadConfig(file: string): Promise<ServerConfig> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`${file}: cannot read the config file (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  return parseConfig(text, file);
}
