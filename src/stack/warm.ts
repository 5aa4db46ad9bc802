/**
 * Warming a stack's cache layer ahead of time: the ranges asked for are read from below the
 * cache and stored in it (cache-fill.ts), several pieces at once.
 *
 * - Resumable: a range the cache already holds (its own map says data or zero) is skipped
 *   without reading below, so a warm that was interrupted and started again reads only what is
 *   left. A range a layer above the cache holds is skipped too: no read ever falls through to
 *   the cache there.
 * - Pieces are at most `pieceBytes` and aligned to it (whole chunks fall inside a piece, so an
 *   all-zero chunk is stored as a zero chunk); `jobs` pieces are in flight at once, which
 *   bounds memory (jobs × pieceBytes) and what a warm of a served export takes from clients.
 * - A bounded cache: the warm stops once it has stored as much data as the cache keeps, so it
 *   never makes the cache give up what this warm stored itself; the caller is told beforehand
 *   when more than the limit is asked for.
 * - Ranges are widened to whole sectors of the cache, unless `exact` (NBD_CMD_CACHE: only the
 *   whole sectors inside the range are stored, as a read of it would).
 */
import { RequestError } from '../block/errors.js';
import type { Run } from '../block/runs.js';
import { AsifImage } from '../formats/asif/index.js';
import type { Stack } from './stack.js';

export interface WarmRange {
  offset: number;
  length: number;
}

export interface WarmOptions {
  /** Pieces read and stored at once (default 8). */
  jobs?: number;
  /** Largest piece (default 4 MiB); pieces are aligned to it. */
  pieceBytes?: number;
  /** Keep the ranges as they are instead of widening them to whole sectors. */
  exact?: boolean;
  /** Told of bytes done (skipped or stored) out of the total asked for. */
  onProgress?(done: number, total: number): void;
  onWarning?(message: string): void;
  /** Stops handing out pieces; the warm resolves with what it did (`stopped: 'aborted'`). */
  signal?: AbortSignal;
}

export interface WarmResult {
  /** Bytes asked for, within the disk, overlaps merged. */
  requestedBytes: number;
  /** Read from below the cache and stored in it. */
  readBytes: number;
  /** Skipped: the cache held them already. */
  cachedBytes: number;
  /** Skipped: a layer above the cache holds them. */
  hiddenBytes: number;
  /** Of the bytes read: stored as data, and stored as zeros (zero chunks). */
  storedDataBytes: number;
  storedZeroBytes: number;
  /** Left undone: the cache's limit was reached, or the warm was aborted. */
  leftBytes: number;
  stopped: 'done' | 'limit' | 'aborted';
  seconds: number;
}

const DEFAULT_JOBS = 8;
const DEFAULT_PIECE = 4 * 1024 * 1024;

/** Sorted, merged ranges inside [0, size), widened to `align` (1: as they are). */
export function normalizeRanges(ranges: readonly WarmRange[], size: number, align: number): WarmRange[] {
  const clipped: WarmRange[] = [];
  for (const r of ranges) {
    const start = Math.max(0, Math.floor(r.offset / align) * align);
    const end = Math.min(size, Math.ceil((r.offset + r.length) / align) * align);
    if (end > start) clipped.push({ offset: start, length: end - start });
  }
  clipped.sort((a, b) => a.offset - b.offset);
  const out: WarmRange[] = [];
  for (const r of clipped) {
    const last = out[out.length - 1];
    if (last && r.offset <= last.offset + last.length) last.length = Math.max(last.length, r.offset + r.length - last.offset);
    else out.push({ ...r });
  }
  return out;
}

/** The pieces of `ranges`: cut at every multiple of `piece`. */
function* piecesOf(ranges: readonly WarmRange[], piece: number): Generator<WarmRange> {
  for (const r of ranges) {
    for (let at = r.offset; at < r.offset + r.length; ) {
      const next = Math.min(r.offset + r.length, (Math.floor(at / piece) + 1) * piece);
      yield { offset: at, length: next - at };
      at = next;
    }
  }
}

/** What to do with each part of a piece: skip it (held above or in the cache) or fetch it. */
async function sortOut(stack: Stack, cacheIndex: number, piece: WarmRange): Promise<{ hidden: number; cached: number; fetch: Run[] }> {
  let open: WarmRange[] = [piece];
  let hidden = 0;
  for (let level = stack.layers.length - 1; level > cacheIndex && open.length > 0; level--) {
    const layer = stack.layers[level];
    const next: WarmRange[] = [];
    for (const r of open) {
      // Past a smaller layer's end, that layer reads as zeros: nothing below shows.
      const inside = Math.max(0, Math.min(r.length, layer.size - r.offset));
      hidden += r.length - inside;
      if (inside === 0) continue;
      for (const run of await layer.map(r.offset, inside)) {
        if (run.state === 'absent') next.push(run);
        else hidden += run.length;
      }
    }
    open = next;
  }
  let cached = 0;
  const fetch: Run[] = [];
  const cache = stack.layers[cacheIndex];
  for (const r of open) {
    for (const run of await cache.map(r.offset, r.length)) {
      if (run.state === 'absent') fetch.push(run);
      else cached += run.length;
    }
  }
  return { hidden, cached, fetch };
}

/** Warms `ranges` of the stack's cache layer (all of it when `ranges` is null). */
export async function warmStack(stack: Stack, ranges: readonly WarmRange[] | null, options: WarmOptions = {}): Promise<WarmResult> {
  const started = performance.now();
  const cacheIndex = stack.layers.findIndex((l) => l.layerType === 'cache');
  if (cacheIndex <= 0) throw new RequestError('EINVAL', 'the stack has no cache layer to warm');
  const cache = stack.layers[cacheIndex];
  if (cache.readOnly) throw new RequestError('EPERM', `${cache.path}: the cache layer is open read-only (another program has it open for writing? a server warms the caches it serves with stackbd ctl warm)`);
  const jobs = Math.max(1, Math.floor(options.jobs ?? DEFAULT_JOBS));
  const pieceBytes = options.pieceBytes ?? DEFAULT_PIECE;
  if (!(pieceBytes > 0) || pieceBytes % cache.blockSize !== 0) throw new RangeError(`a warm piece of ${pieceBytes} bytes is not whole sectors`);
  const wanted = normalizeRanges(ranges ?? [{ offset: 0, length: cache.size }], cache.size, options.exact ? 1 : cache.blockSize);
  const requestedBytes = wanted.reduce((n, r) => n + r.length, 0);
  const limit = cache instanceof AsifImage ? cache.cacheLimit : null;
  if (limit !== null && requestedBytes > limit) {
    options.onWarning?.(`${requestedBytes} bytes asked for, more than the ${limit} bytes of data the cache keeps (${cache.path}): the warm stops once it has stored that much data`);
  }
  const result: WarmResult = { requestedBytes, readBytes: 0, cachedBytes: 0, hiddenBytes: 0, storedDataBytes: 0, storedZeroBytes: 0, leftBytes: 0, stopped: 'done', seconds: 0 };
  const pieces = piecesOf(wanted, pieceBytes);
  let done = 0;
  let inFlight = 0;
  let failure: { err: unknown } | null = null;

  const worker = async (): Promise<void> => {
    const buf = Buffer.allocUnsafe(Math.min(pieceBytes, requestedBytes));
    for (;;) {
      if (failure || result.stopped !== 'done') return;
      if (options.signal?.aborted) {
        result.stopped = 'aborted';
        return;
      }
      // Never store more data than the cache keeps (zeros cost nothing): near the limit, the
      // pieces in flight finish first, and the last one decides.
      if (limit !== null && result.storedDataBytes + (inFlight + 1) * pieceBytes > limit) {
        if (inFlight === 0) result.stopped = 'limit';
        return;
      }
      const next = pieces.next();
      if (next.done) return;
      const piece = next.value;
      inFlight++;
      try {
        const { hidden, cached, fetch } = await sortOut(stack, cacheIndex, piece);
        result.hiddenBytes += hidden;
        result.cachedBytes += cached;
        for (const run of fetch) {
          const stored = await stack.fillCache(buf.subarray(0, run.length), run.offset);
          result.readBytes += run.length;
          result.storedDataBytes += stored.dataBytes;
          result.storedZeroBytes += stored.zeroBytes;
        }
        done += piece.length;
        options.onProgress?.(done, requestedBytes);
      } catch (err) {
        failure ??= { err };
      } finally {
        inFlight--;
      }
    }
  };
  await Promise.all(Array.from({ length: jobs }, worker));
  if (failure) throw (failure as { err: unknown }).err;
  result.leftBytes = requestedBytes - done;
  result.seconds = (performance.now() - started) / 1000;
  return result;
}
