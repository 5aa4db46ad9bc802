/**
 * Sizes on the command line: a number of bytes with an optional suffix. K, M, G, T, P (and KiB,
 * MiB, ...) are binary; KB, MB, GB, TB, PB are decimal, as Apple's tools and disk vendors use.
 */
import { UsageError } from './usage-error.js';

const BINARY: Readonly<Record<string, number>> = { K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };
const DECIMAL: Readonly<Record<string, number>> = { K: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15 };

/** The largest size stackbd handles: offsets are JavaScript numbers, exact below 2^53. */
export const MAX_SIZE = Number.MAX_SAFE_INTEGER;

/** Bytes in `text`; `option` (e.g. "--size") names where it came from in messages. */
export function parseSize(text: string, option = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(?:([KMGTP])(i?B)?|(B))?\s*$/i.exec(text);
  if (!m) throw new UsageError(`${option} ${JSON.stringify(text)} is not a size (examples: 40G, 512M, 1T, 100GB, 4096)`);
  const value = Number(m[1]);
  let bytes = value;
  if (m[2]) {
    const unit = m[2].toUpperCase();
    const decimal = m[3] !== undefined && m[3].toUpperCase() === 'B';
    bytes = value * (decimal ? DECIMAL[unit] : BINARY[unit]);
  }
  if (bytes > MAX_SIZE) throw new UsageError(`${option} ${text} is larger than the largest size stackbd handles, ${MAX_SIZE} bytes (8 PiB - 1)`);
  if (!Number.isInteger(bytes)) throw new UsageError(`${option} ${text} is not a whole number of bytes (${bytes})`);
  return bytes;
}

export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let i = 0;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  return `${Number.isInteger(value) ? value : value.toFixed(2)} ${units[i]}`;
}
