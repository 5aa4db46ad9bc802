/**
 * Copying a whole image in pieces, several pieces at once (convert, commit).
 *
 * - Input: a source that maps and reads (a stack, or one layer), and a sink that takes writes
 *   and, optionally, zeroed ranges. The source's map is walked a window at a time (at most
 *   MAP_RUNS runs), so holes cost nothing to skip and a fragmented map never sits in memory
 *   whole. Data runs are packed into pieces of at most `pieceBytes` bytes of data (one buffer
 *   each); zero runs go to the sink's `zero` when it has one; absent runs are skipped.
 * - States of a piece: reading (all its runs at once), then writing, then done (its buffer goes
 *   back to the pool). At most `inFlight` pieces exist at a time, so memory is bounded by
 *   `inFlight × pieceBytes` whatever the image's size.
 * - Invariants: with an `ordered` sink (a streaming writer such as DMG) writes are made one at
 *   a time in increasing disk order, piece after piece, while later pieces are already being
 *   read; otherwise the pieces' writes may run at once, except that a piece whose first write
 *   shares a WRITE_GRANULE block with the previous piece's last one waits for it (a format
 *   completes a partial block by read-modify-write, which must not interleave). Progress reports
 *   only what is done, in disk order. The first failure stops the walk: no new piece starts,
 *   no piece that has not begun writing writes, every piece in flight is waited for, and then
 *   the first error is thrown.
 */
import type { Run } from '../block/runs.js';

/** Bytes of data per piece (one buffer). */
export const DEFAULT_PIECE_BYTES = 4 * 1024 * 1024;
/** Pieces being read or written at once. */
export const DEFAULT_IN_FLIGHT = 4;
/** Runs asked of the map at once; and a window never spans more than this many pieces. */
const MAP_RUNS = 4096;
const WINDOW_PIECES = 16;
/** Two pieces writing into one such block never write at once (at least every format's block size). */
const WRITE_GRANULE = 4096;
/** Granularity at which all-zero data is recognised and skipped. */
const ZERO_SCAN = 64 * 1024;
const EMPTY = Buffer.alloc(0);

export interface BulkSource {
  readonly size: number;
  /** Runs covering [offset, offset + length), or a non-empty prefix of it (see Layer.map). */
  map(offset: number, length: number, maxRuns: number): Promise<Run[]>;
  read(buf: Buffer, offset: number): Promise<unknown>;
}

export interface BulkSink {
  write(data: Buffer, offset: number): Promise<void>;
  /** Where the source says zero; without it, zero runs are skipped like absent ones. */
  zero?(offset: number, length: number): Promise<void>;
  /** Writes must come one at a time in increasing disk order (a streaming writer). */
  ordered?: boolean;
  /** Leave out data that is all zeros (the output starts as zeros). */
  skipZeroData?: boolean;
}

export interface BulkCopyOptions {
  /** Bytes of data per piece (default 4 MiB). */
  pieceBytes?: number;
  /** Pieces in flight at once (default 4). */
  inFlight?: number;
  /** Called with the bytes done (a prefix of the disk) and the total, as pieces finish. */
  onProgress?: (done: number, total: number) => void;
}

/** One run of a piece: data at `at` in the piece's buffer, or a zeroed range (`at` = -1). */
interface Op {
  offset: number;
  length: number;
  at: number;
}

interface Piece {
  ops: Op[];
  /** Data bytes (the used part of the buffer). */
  bytes: number;
  /** Everything before this disk offset is handled once this piece and those before it are. */
  end: number;
}

export function isAllZero(buf: Buffer): boolean {
  // Compare 8 bytes at a time where alignment allows; zero pages are the common case.
  const words = Math.floor(buf.length / 8);
  const view = new BigUint64Array(buf.buffer, buf.byteOffset, buf.byteOffset % 8 === 0 ? words : 0);
  for (let i = 0; i < view.length; i++) if (view[i] !== 0n) return false;
  for (let i = view.length * 8; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

/** Writes the parts of `data` that are not all zeros (scanned in ZERO_SCAN steps), merged. */
export async function writeNonZero(data: Buffer, offset: number, write: (piece: Buffer, at: number) => Promise<void>): Promise<void> {
  let start = -1;
  for (let pos = 0; pos < data.length; pos += ZERO_SCAN) {
    const end = Math.min(pos + ZERO_SCAN, data.length);
    const zero = isAllZero(data.subarray(pos, end));
    if (!zero && start < 0) start = pos;
    if (zero && start >= 0) {
      await write(data.subarray(start, pos), offset + start);
      start = -1;
    }
  }
  if (start >= 0) await write(data.subarray(start), offset + start);
}

function positiveInteger(value: number, name: string): number {
  if (!Number.isSafeInteger(value) || value <= 0) throw new RangeError(`${name} must be a positive whole number, not ${value}`);
  return value;
}

/** Cuts one window of runs into pieces. */
function piecesOf(runs: readonly Run[], pieceBytes: number, zeros: boolean): Piece[] {
  const pieces: Piece[] = [];
  let piece: Piece = { ops: [], bytes: 0, end: 0 };
  const close = (end: number): void => {
    piece.end = end;
    pieces.push(piece);
    piece = { ops: [], bytes: 0, end };
  };
  for (const run of runs) {
    if (run.state === 'data') {
      const end = run.offset + run.length;
      for (let pos = run.offset; pos < end; ) {
        if (piece.bytes === pieceBytes) close(pos);
        const n = Math.min(end - pos, pieceBytes - piece.bytes);
        const last = piece.ops[piece.ops.length - 1];
        // Data runs that touch (from different layers) are read as one.
        if (last && last.at >= 0 && last.offset + last.length === pos) last.length += n;
        else piece.ops.push({ offset: pos, length: n, at: piece.bytes });
        piece.bytes += n;
        pos += n;
      }
    } else if (run.state === 'zero' && zeros) {
      piece.ops.push({ offset: run.offset, length: run.length, at: -1 });
      if (piece.ops.length >= MAP_RUNS) close(run.offset + run.length);
    }
    piece.end = run.offset + run.length;
  }
  // The window's last piece, even an empty one: it carries the progress over the holes.
  pieces.push(piece);
  return pieces;
}

/** Copies every data (and, with `sink.zero`, zero) run of `source` into `sink`. */
export async function bulkCopy(source: BulkSource, sink: BulkSink, options: BulkCopyOptions = {}): Promise<void> {
  const pieceBytes = positiveInteger(options.pieceBytes ?? DEFAULT_PIECE_BYTES, 'pieceBytes');
  const inFlight = positiveInteger(options.inFlight ?? DEFAULT_IN_FLIGHT, 'inFlight');
  const size = source.size;
  const failure: { error?: unknown; failed: boolean } = { failed: false };
  const free: Buffer[] = [];
  const running: Array<{ done: Promise<void>; end: number }> = [];
  /** The last piece that writes: when it has finished writing (or given up), and its last block. */
  let lastWrite: Promise<void> = Promise.resolve();
  let lastBlock = -1;

  const writeOp = (buf: Buffer, op: Op): Promise<void> => {
    if (op.at < 0) return sink.zero ? sink.zero(op.offset, op.length) : Promise.resolve();
    const data = buf.subarray(op.at, op.at + op.length);
    return sink.skipZeroData ? writeNonZero(data, op.offset, (d, at) => sink.write(d, at)) : sink.write(data, op.offset);
  };

  const start = (piece: Piece): void => {
    const buf = piece.bytes === 0 ? EMPTY : (free.pop() ?? Buffer.allocUnsafe(pieceBytes));
    const previous = lastWrite;
    let finishWrite = (): void => undefined;
    const written = new Promise<void>((resolve) => (finishWrite = resolve));
    const first = piece.ops[0];
    const final = piece.ops[piece.ops.length - 1];
    const follows = sink.ordered === true || (first !== undefined && Math.floor(first.offset / WRITE_GRANULE) <= lastBlock);
    if (final) {
      lastWrite = written;
      lastBlock = Math.floor((final.offset + final.length - 1) / WRITE_GRANULE);
    }
    const done = (async () => {
      try {
        await Promise.all(piece.ops.filter((op) => op.at >= 0).map((op) => source.read(buf.subarray(op.at, op.at + op.length), op.offset)));
        if (follows) await previous;
        if (failure.failed) return;
        for (const op of piece.ops) await writeOp(buf, op);
      } catch (err) {
        if (!failure.failed) {
          failure.failed = true;
          failure.error = err;
        }
      } finally {
        finishWrite();
        if (buf !== EMPTY) free.push(buf);
      }
    })();
    running.push({ done, end: piece.end });
  };

  /** Waits for the oldest piece; reports progress up to its end while nothing has failed. */
  const settleOldest = async (): Promise<void> => {
    const oldest = running.shift();
    if (!oldest) return;
    await oldest.done;
    if (!failure.failed) options.onProgress?.(oldest.end, size);
  };

  try {
    for (let offset = 0; offset < size && !failure.failed; ) {
      const length = Math.min(size - offset, WINDOW_PIECES * pieceBytes);
      const runs = await source.map(offset, length, MAP_RUNS);
      const last = runs[runs.length - 1];
      const end = last ? last.offset + last.length : offset;
      if (runs[0]?.offset !== offset || end <= offset || end > offset + length) {
        throw new RangeError(`the map of [${offset}, ${offset + length}) did not cover a prefix of it`);
      }
      for (const piece of piecesOf(runs, pieceBytes, sink.zero !== undefined)) {
        while (running.length >= inFlight) await settleOldest();
        if (failure.failed) break;
        start(piece);
      }
      offset = end;
    }
    while (running.length > 0) await settleOldest();
  } finally {
    // A map that failed: what is in flight finishes before the error goes on.
    await Promise.all(running.map((r) => r.done));
  }
  if (failure.failed) throw failure.error;
}
