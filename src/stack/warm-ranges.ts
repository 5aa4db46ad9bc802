/**
 * The ranges a warm is asked for, from a file: either lines `OFFSET LENGTH` (decimal or 0x hex,
 * `#` starts a comment; what `serve --record-reads` writes), or the JSON of `stackbd map --json`
 * or `qemu-img map --output=json` (a list of objects with `offset` or `start`, and `length`).
 * Entries of a map that say they hold no data (`state` zero or absent, `data: false`) are left
 * out: warming a hole fetches nothing worth keeping.
 */
import fs from 'node:fs/promises';
import { StackbdError } from '../block/errors.js';
import type { WarmRange } from './warm.js';

/** A ranges file that cannot be read as one; the message names the file and the line. */
export class RangesFileError extends StackbdError {
  override name = 'RangesFileError';
}

/** A ranges file larger than this is refused (a recorded boot of a large disk is a few KiB). */
const MAX_FILE_BYTES = 64 * 1024 * 1024;

function parseNumber(text: string): number | null {
  const value = /^0x[0-9a-f]+$/i.test(text) ? parseInt(text.slice(2), 16) : /^\d+$/.test(text) ? Number(text) : NaN;
  return Number.isSafeInteger(value) ? value : null;
}

function fromLines(text: string, source: string): WarmRange[] {
  const out: WarmRange[] = [];
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') continue;
    const fields = line.split(/\s+/);
    const offset = fields.length === 2 ? parseNumber(fields[0]) : null;
    const length = fields.length === 2 ? parseNumber(fields[1]) : null;
    if (offset === null || length === null) throw new RangesFileError(`${source}: line ${i + 1}: expected "OFFSET LENGTH" (decimal or 0x hex), not ${JSON.stringify(raw.trim())}`);
    if (length > 0) out.push({ offset, length });
  }
  return out;
}

function fromJson(value: unknown, source: string): WarmRange[] {
  if (!Array.isArray(value)) throw new RangesFileError(`${source}: expected a JSON list of {offset or start, length} objects`);
  const out: WarmRange[] = [];
  for (const [i, entry] of value.entries()) {
    const e = entry as Record<string, unknown> | null;
    const offset = e && typeof e === 'object' ? (e.offset ?? e.start) : undefined;
    const length = e && typeof e === 'object' ? e.length : undefined;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || (offset as number) < 0 || (length as number) < 0) {
      throw new RangesFileError(`${source}: entry ${i}: expected {offset or start, length} with whole numbers`);
    }
    if (e!.state === 'zero' || e!.state === 'absent' || e!.data === false) continue;
    if ((length as number) > 0) out.push({ offset: offset as number, length: length as number });
  }
  return out;
}

/** Parses the text of a ranges file (`source` names it in errors). */
export function parseRanges(text: string, source: string): WarmRange[] {
  const start = text.trimStart();
  if (start.startsWith('[') || start.startsWith('{')) {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new RangesFileError(`${source}: not valid JSON (${err instanceof Error ? err.message : String(err)})`);
    }
    return fromJson(value, source);
  }
  return fromLines(text, source);
}

export async function readRangesFile(file: string): Promise<WarmRange[]> {
  let handle;
  try {
    handle = await fs.open(file, 'r');
  } catch (err) {
    throw new RangesFileError(`${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new RangesFileError(`${file}: not a regular file`);
    const size = st.size;
    if (size > MAX_FILE_BYTES) throw new RangesFileError(`${file}: ${size} bytes is more than a ranges file may be (${MAX_FILE_BYTES})`);
    return parseRanges(await handle.readFile('utf8'), file);
  } finally {
    await handle.close();
  }
}

/** The text of a ranges file: one `OFFSET LENGTH` line per range, after `# ` comment lines. */
export function formatRanges(ranges: readonly WarmRange[], comments: readonly string[] = []): string {
  return [...comments.map((c) => `# ${c}`), ...ranges.map((r) => `${r.offset} ${r.length}`)].join('\n') + '\n';
}
