/**
 * The `--header-file` format: one `Name: value` a line; blank lines and lines starting with #
 * are ignored. Names must be HTTP tokens; headers stackbd sets itself (Range, the conditional
 * ones, Host) are refused, so a file cannot break the integrity checks.
 */
import fs from 'node:fs/promises';

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const RESERVED = new Set(['range', 'if-match', 'if-none-match', 'if-unmodified-since', 'if-modified-since', 'if-range', 'host', 'content-length', 'transfer-encoding', 'connection']);

export class HeaderFileError extends Error {
  override name = 'HeaderFileError';
}

export function parseHeaderFile(text: string, file: string): Record<string, string> {
  const headers: Record<string, string> = {};
  text.split(/\r?\n/).forEach((line, i) => {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    const colon = trimmed.indexOf(':');
    const where = `${file} line ${i + 1}`;
    if (colon <= 0) throw new HeaderFileError(`${where}: expected "Name: value"`);
    const name = trimmed.slice(0, colon).trim();
    const value = trimmed.slice(colon + 1).trim();
    if (!TOKEN.test(name)) throw new HeaderFileError(`${where}: "${name}" is not a valid header name`);
    if (RESERVED.has(name.toLowerCase())) throw new HeaderFileError(`${where}: ${name} is set by stackbd and cannot be given`);
    if (/[\0\r\n]/.test(value)) throw new HeaderFileError(`${where}: the value has a control character`);
    const key = Object.keys(headers).find((k) => k.toLowerCase() === name.toLowerCase());
    if (key !== undefined) throw new HeaderFileError(`${where}: ${name} is given twice`);
    headers[name] = value;
  });
  return headers;
}

export async function loadHeaderFile(file: string): Promise<Record<string, string>> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new HeaderFileError(`${file}: cannot read the header file (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  return parseHeaderFile(text, file);
}
