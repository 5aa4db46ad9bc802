/**
 * One transmission-phase request: validate it (in the order the protocol checklist gives),
 * run it on the export, and encode its reply for the connection's reply mode. Every failure
 * becomes an NBD error reply through `toNbdErrno`; nothing here closes a connection.
 *
 * The export call happens synchronously, before the first await, so the export sees requests
 * in the order the session parsed them (it orders overlapping writes by that order).
 */
import { NbdErrno, RequestError, toNbdErrno } from '../block/errors.js';
import type { Run } from '../block/runs.js';
import { AllocationState, Command, CommandFlag, DIRTY_STATE, Limits } from '../nbd/constants.js';
import {
  dataChunkPrefixSize,
  encodeBlockStatusChunk,
  encodeDoneChunk,
  encodeErrorChunk,
  encodeHoleChunk,
  encodeSimpleReply,
  writeDataChunkPrefix,
  writeSimpleReplyHeader,
  type ReplyMode,
  type RequestHeader,
  type StatusExtent,
} from '../nbd/codec.js';
import type { DepthRun } from '../stack/stack.js';
import type { Export } from './export.js';
import type { Operation } from './export-stats.js';
import type { ContextKind } from './meta-contexts.js';

/** Where replies go. Each call's buffers are written together, in order, nothing in between. */
export interface ReplySink {
  /**
   * The buffers of one reply, written back to back with nothing in between. `release` runs
   * once the connection no longer needs them (written, or the connection is gone).
   */
  send(buffers: readonly Buffer[], release?: () => void): void;
  /** A buffer for a reply's data, to be handed back with `recycle` (directly or as `release`). */
  allocate(size: number): Buffer;
  recycle(buf: Buffer): void;
}

export interface Connection {
  export: Export;
  mode: ReplyMode;
  contexts: ReadonlyMap<number, { kind: ContextKind; name: string }>;
}

export interface Request extends RequestHeader {
  /** WRITE data; empty for every other command. */
  payload: Buffer;
}

/** Zero runs shorter than this are sent as data: a hole chunk costs more than it saves. */
const MIN_HOLE_CHUNK = 4096;
/** At most this many extents per block status chunk (the protocol allows fewer than asked for,
 * and clients ask again from where the answer ended; it keeps each request's work bounded). */
const MAX_EXTENTS = 4096;

const VALID_FLAGS: Readonly<Record<number, number>> = {
  [Command.READ]: CommandFlag.FUA | CommandFlag.DF,
  [Command.WRITE]: CommandFlag.FUA | CommandFlag.PAYLOAD_LEN,
  [Command.FLUSH]: CommandFlag.FUA,
  [Command.TRIM]: CommandFlag.FUA,
  [Command.CACHE]: CommandFlag.FUA,
  [Command.WRITE_ZEROES]: CommandFlag.FUA | CommandFlag.NO_HOLE | CommandFlag.FAST_ZERO,
  [Command.BLOCK_STATUS]: CommandFlag.FUA | CommandFlag.REQ_ONE,
};

class Rejection {
  constructor(
    readonly errno: number,
    readonly message: string,
  ) {}
}

function reject(errno: number, message: string): Rejection {
  return new Rejection(errno, message);
}

/** The protocol's validation order: command, flags, bounds, alignment, permission. */
function validate(req: Request, conn: Connection): Rejection | null {
  const exp = conn.export;
  const valid = VALID_FLAGS[req.type];
  if (valid === undefined) return reject(NbdErrno.EINVAL, `unknown command ${req.type}`);
  let allowed = valid;
  if (conn.mode !== 'extended') allowed &= ~CommandFlag.PAYLOAD_LEN;
  if (conn.mode === 'simple') allowed &= ~CommandFlag.DF;
  if (exp.readOnly) allowed &= ~CommandFlag.FUA;
  if ((req.flags & ~allowed) !== 0) {
    return reject(NbdErrno.EINVAL, `flags 0x${req.flags.toString(16)} are not valid for command ${req.type}`);
  }
  if (conn.mode === 'extended' && req.type === Command.WRITE && (req.flags & CommandFlag.PAYLOAD_LEN) === 0) {
    return reject(NbdErrno.EINVAL, 'an extended WRITE must carry PAYLOAD_LEN');
  }
  const length = req.type === Command.WRITE ? req.payload.length : req.length;
  const end = req.offset + length;
  switch (req.type) {
    case Command.READ:
    case Command.TRIM:
    case Command.CACHE:
    case Command.BLOCK_STATUS:
      if (end > exp.size || end > Number.MAX_SAFE_INTEGER) {
        return reject(NbdErrno.EINVAL, `range ${req.offset}+${length} is past the end of the export (${exp.size})`);
      }
      break;
    case Command.WRITE:
    case Command.WRITE_ZEROES:
      if (end > exp.size || end > Number.MAX_SAFE_INTEGER) {
        return reject(NbdErrno.ENOSPC, `range ${req.offset}+${length} is past the end of the export (${exp.size})`);
      }
      break;
    default:
      break;
  }
  if (req.type === Command.READ && req.length > Limits.MAX_PAYLOAD) {
    return reject(NbdErrno.EINVAL, `read of ${req.length} bytes is over the maximum payload ${Limits.MAX_PAYLOAD}`);
  }
  if (req.type === Command.WRITE && req.payload.length > Limits.MAX_PAYLOAD) {
    return reject(NbdErrno.EINVAL, `write of ${req.payload.length} bytes is over the maximum payload ${Limits.MAX_PAYLOAD}`);
  }
  const writes = req.type === Command.WRITE || req.type === Command.WRITE_ZEROES || req.type === Command.TRIM;
  if (writes && exp.readOnly) return reject(NbdErrno.EPERM, 'the export is read-only');
  if (req.type === Command.BLOCK_STATUS) {
    if (conn.mode === 'simple') return reject(NbdErrno.EINVAL, 'block status needs structured replies');
    if (conn.contexts.size === 0) return reject(NbdErrno.EINVAL, 'no metadata context was selected');
    if (req.length === 0) return reject(NbdErrno.EINVAL, 'block status of zero bytes');
  }
  return null;
}

/** Sends the success reply of a command without payload. */
function sendOk(req: Request, conn: Connection, sink: ReplySink): void {
  sink.send([conn.mode === 'extended' ? encodeDoneChunk(conn.mode, req.cookie, req.offset) : encodeSimpleReply(req.cookie, 0)]);
}

function sendError(req: Request, conn: Connection, sink: ReplySink, errno: number, message: string): void {
  if (conn.mode === 'simple') sink.send([encodeSimpleReply(req.cookie, errno)]);
  else sink.send([encodeErrorChunk(conn.mode, req.cookie, req.offset, errno, message)]);
}

const OPERATION_OF: Readonly<Record<number, Operation>> = {
  [Command.READ]: 'read',
  [Command.WRITE]: 'write',
  [Command.FLUSH]: 'flush',
  [Command.TRIM]: 'trim',
  [Command.CACHE]: 'cache',
  [Command.WRITE_ZEROES]: 'zero',
  [Command.BLOCK_STATUS]: 'block_status',
};

/**
 * Validates, runs and answers one request, and records its outcome and latency in the export's
 * stats. One async frame for everything but reads and block status (which have one more): a
 * request's frames and closures are most of the garbage the collector handles per request.
 */
export async function dispatch(req: Request, conn: Connection, sink: ReplySink): Promise<void> {
  const started = performance.now();
  const exp = conn.export;
  let errno = 0;
  const rejection = validate(req, conn);
  if (rejection) {
    sendError(req, conn, sink, rejection.errno, rejection.message);
    errno = rejection.errno;
  } else {
    try {
      const fua = (req.flags & CommandFlag.FUA) !== 0 ? FUA : undefined;
      switch (req.type) {
        case Command.READ:
          await handleRead(req, conn, sink);
          break;
        case Command.BLOCK_STATUS:
          await handleBlockStatus(req, conn, sink);
          break;
        case Command.WRITE:
          if (req.payload.length > 0) await exp.write(req.payload, req.offset, fua);
          sendOk(req, conn, sink);
          break;
        case Command.FLUSH:
          await exp.flush();
          sendOk(req, conn, sink);
          break;
        case Command.TRIM:
          if (req.length > 0) await exp.trim(req.offset, req.length, fua);
          sendOk(req, conn, sink);
          break;
        case Command.CACHE:
          if (req.length > 0) await exp.cache(req.offset, req.length);
          sendOk(req, conn, sink);
          break;
        case Command.WRITE_ZEROES:
          if (req.length > 0) {
            await exp.writeZeroes(req.offset, req.length, {
              fua: fua !== undefined,
              noHole: (req.flags & CommandFlag.NO_HOLE) !== 0,
              fast: (req.flags & CommandFlag.FAST_ZERO) !== 0,
            });
          }
          sendOk(req, conn, sink);
          break;
      }
    } catch (err) {
      errno = toNbdErrno(err, { fastZero: (req.flags & CommandFlag.FAST_ZERO) !== 0, df: (req.flags & CommandFlag.DF) !== 0 });
      // A RequestError is an answer the code meant (read-only, out of range...); anything else
      // (the disk failing, a damaged image, a bug) is logged with the request it broke.
      if (!(err instanceof RequestError)) {
        const length = req.type === Command.WRITE ? req.payload.length : req.length;
        exp.logUnexpected(err, { command: OPERATION_OF[req.type] ?? String(req.type), offset: req.offset, length });
      }
      sendError(req, conn, sink, errno, err instanceof Error ? err.message : String(err));
    }
  }
  const op = OPERATION_OF[req.type];
  if (op) {
    const bytes = req.type === Command.WRITE ? req.payload.length : req.length;
    exp.stats.record(op, bytes, (performance.now() - started) / 1000, errno);
  }
}

const FUA = { fua: true } as const;

async function handleRead(req: Request, conn: Connection, sink: ReplySink): Promise<void> {
  const exp = conn.export;
  if (req.length === 0 && conn.mode !== 'simple') {
    sink.send([encodeDoneChunk(conn.mode, req.cookie, req.offset)]);
    return;
  }
  // One buffer per reply: the header in front, the data filled in place by the layers.
  const prefix = conn.mode === 'simple' ? 16 : dataChunkPrefixSize(conn.mode);
  const buf = sink.allocate(prefix + req.length);
  const release = (): void => sink.recycle(buf);
  const data = buf.subarray(prefix);
  let runs: Run[];
  try {
    runs = req.length > 0 ? await exp.read(data, req.offset) : [];
  } catch (err) {
    release();
    throw err;
  }
  if (conn.mode === 'simple') {
    writeSimpleReplyHeader(buf, 0, 0, req.cookie);
    sink.send([buf], release);
    return;
  }
  const holes = (req.flags & CommandFlag.DF) === 0 && runs.some(isHoleChunk);
  if (!holes) {
    writeDataChunkPrefix(buf, 0, conn.mode, req.cookie, req.offset, req.offset, req.length, true);
    sink.send([buf], release);
    return;
  }
  sink.send(readChunks(req, conn.mode, data, runs), release);
}

/** A run worth sending as a hole chunk. */
function isHoleChunk(run: Run): boolean {
  return run.state !== 'data' && run.length >= MIN_HOLE_CHUNK;
}

/** The chunks of a read reply with holes: data runs as OFFSET_DATA, long zero runs as
 * OFFSET_HOLE, the last chunk marked DONE (every byte is already read, no error can follow). */
function readChunks(req: Request, mode: ReplyMode, data: Buffer, runs: Run[]): Buffer[] {
  const pieces: Array<{ offset: number; length: number; hole: boolean }> = [];
  for (const run of runs) {
    const hole = isHoleChunk(run);
    const last = pieces[pieces.length - 1];
    if (last && !last.hole && !hole) last.length += run.length;
    else pieces.push({ offset: run.offset, length: run.length, hole });
  }
  const out: Buffer[] = [];
  pieces.forEach((piece, i) => {
    const done = i === pieces.length - 1;
    if (piece.hole) {
      out.push(encodeHoleChunk(mode, req.cookie, req.offset, piece.offset, piece.length, done));
      return;
    }
    const head = Buffer.allocUnsafe(dataChunkPrefixSize(mode));
    writeDataChunkPrefix(head, 0, mode, req.cookie, req.offset, piece.offset, piece.length, done);
    const from = piece.offset - req.offset;
    out.push(head, data.subarray(from, from + piece.length));
  });
  return out;
}

function allocationFlags(run: DepthRun): number {
  return run.state === 'data' ? 0 : AllocationState.HOLE | AllocationState.ZERO;
}

/** Turns runs into descriptors, merging neighbours with equal status. */
function toExtents<T extends { length: number }>(runs: readonly T[], status: (run: T) => number, reqOne: boolean): StatusExtent[] {
  const out: StatusExtent[] = [];
  for (const run of runs) {
    const flags = status(run);
    const last = out[out.length - 1];
    if (last && last.flags === flags) last.length += run.length;
    else {
      if (out.length >= MAX_EXTENTS) break;
      out.push({ length: run.length, flags });
    }
  }
  return reqOne ? out.slice(0, 1) : out;
}

async function handleBlockStatus(req: Request, conn: Connection, sink: ReplySink): Promise<void> {
  const exp = conn.export;
  const reqOne = (req.flags & CommandFlag.REQ_ONE) !== 0;
  const kinds = new Set([...conn.contexts.values()].map((c) => c.kind));
  // REQ_ONE (QEMU asks this way, once per extent) needs only the first run of each map.
  const maxRuns = reqOne ? 1 : MAX_EXTENTS;
  const merged = kinds.has('allocation') || kinds.has('depth') ? await exp.extents(req.offset, req.length, maxRuns) : [];
  const dirty = kinds.has('dirty') ? await exp.topMap(req.offset, req.length, maxRuns) : [];
  const chunks: Buffer[] = [];
  const entries = [...conn.contexts.entries()];
  entries.forEach(([id, context], i) => {
    let extents: StatusExtent[];
    if (context.kind === 'allocation') extents = toExtents(merged, allocationFlags, reqOne);
    else if (context.kind === 'depth') extents = toExtents(merged, (r) => r.depth, reqOne);
    else extents = toExtents(dirty, (r) => (r.state === 'absent' ? 0 : DIRTY_STATE), reqOne);
    chunks.push(encodeBlockStatusChunk(conn.mode, req.cookie, req.offset, id, extents, i === entries.length - 1));
  });
  sink.send(chunks);
}
