/**
 * The client's side of the transmission phase: turns the server's byte stream into settled
 * requests, trusting nothing it receives.
 *
 * Two kinds of fault, told apart by whether the stream can still be framed:
 * - the framing is broken (a bad magic, a header of the wrong kind for the negotiated mode, a
 *   cookie no request in flight has — unknown or answered already —, a chunk longer than the
 *   request could need, a simple reply to a READ in structured mode): `drain` throws
 *   NbdProtocolError and the caller must close the connection;
 * - the framing is intact but a chunk's content is wrong (data outside the request or
 *   overlapping earlier data, a read not fully covered at DONE, status for a context that was
 *   not selected, past the request or missing at DONE, a malformed error chunk, an unknown
 *   chunk type): that one
 *   request fails with NbdProtocolError, its remaining chunks are read and dropped, and the
 *   connection goes on.
 * Every length is checked against what the request can need before bytes are waited for, so the
 * queue never holds more than one chunk the client asked for, and data is copied straight into
 * the request's buffer once its range has been checked.
 */
import type { ByteQueue } from './byte-queue.js';
import { NbdProtocolError, NbdRequestError } from './client-errors.js';
import { readU64, type ReplyMode } from './codec.js';
import { ClientLimits, Command, CommandFlag, Magic, ReplyFlag, ReplyType, Size } from './constants.js';
import { ReadCoverage } from './read-coverage.js';

export interface BlockStatusExtent {
  length: number;
  flags: number;
}

/** A request waiting for its reply, and what its reply has brought so far. */
export interface InFlight {
  readonly type: number;
  readonly flags: number;
  readonly offset: number;
  readonly length: number;
  /** READ: where the data goes, `length` bytes. */
  readonly data: Buffer | null;
  /** BLOCK_STATUS: extents by context id. */
  readonly extents: Map<number, BlockStatusExtent[]>;
  /** The first thing wrong with the reply (an error from the server, or a protocol fault). */
  error: Error | null;
  chunks: number;
  contentChunks: number;
  coverage: ReadCoverage | null;
  settle(error: Error | null): void;
}

/** One reply header read, waiting for its payload. */
interface Frame {
  readonly request: InFlight;
  readonly cookie: bigint;
  readonly simple: boolean;
  /** Simple replies: the error field. */
  readonly error: number;
  readonly flags: number;
  readonly type: number;
  /** Payload bytes that follow the header. */
  readonly length: number;
}

const COMMAND_NAMES: Readonly<Record<number, string>> = {
  [Command.READ]: 'READ',
  [Command.WRITE]: 'WRITE',
  [Command.FLUSH]: 'FLUSH',
  [Command.TRIM]: 'TRIM',
  [Command.CACHE]: 'CACHE',
  [Command.WRITE_ZEROES]: 'WRITE_ZEROES',
  [Command.BLOCK_STATUS]: 'BLOCK_STATUS',
};

function describe(r: InFlight): string {
  return `${COMMAND_NAMES[r.type] ?? `command ${r.type}`} at ${r.offset}+${r.length}`;
}

const MAGIC_OF_MODE: Readonly<Record<ReplyMode, number>> = {
  simple: Magic.SIMPLE_REPLY,
  structured: Magic.STRUCTURED_REPLY,
  extended: Magic.EXTENDED_REPLY,
};

export class ReplyReader {
  private frame: Frame | null = null;

  constructor(
    private readonly queue: ByteQueue,
    private readonly mode: ReplyMode,
    /** Selected metadata contexts by id. */
    private readonly contexts: ReadonlyMap<number, string>,
    private readonly inFlight: Map<bigint, InFlight>,
  ) {}

  /** Applies every whole reply or chunk in the queue; throws NbdProtocolError when the stream cannot be trusted any more. */
  drain(): void {
    for (;;) {
      this.frame ??= this.readHeader();
      const frame = this.frame;
      if (!frame || this.queue.length < frame.length) return;
      this.frame = null;
      if (frame.simple) this.applySimple(frame);
      else this.applyChunk(frame);
    }
  }

  private readHeader(): Frame | null {
    if (this.queue.length < 4) return null;
    const magic = this.queue.peek(4).readUInt32BE(0);
    const simple = magic === Magic.SIMPLE_REPLY;
    if (magic !== MAGIC_OF_MODE[this.mode] && !(simple && this.mode === 'structured')) {
      const known = Object.entries(MAGIC_OF_MODE).find(([, m]) => m === magic);
      throw new NbdProtocolError(
        known ? `${known[0] === 'extended' ? 'an' : 'a'} ${known[0]} reply header, but ${this.mode} replies were negotiated` : `bad reply magic 0x${magic.toString(16).padStart(8, '0')}`,
      );
    }
    const size = simple ? Size.SIMPLE_REPLY : this.mode === 'extended' ? Size.EXTENDED_REPLY : Size.STRUCTURED_REPLY;
    if (this.queue.length < size) return null;
    const head = this.queue.take(size);
    const cookie = head.readBigUInt64BE(8);
    const request = this.inFlight.get(cookie);
    if (!request) throw new NbdProtocolError(`a reply for cookie ${cookie}, which no request in flight has (unknown, or answered already)`);
    if (simple) {
      const error = head.readUInt32BE(4);
      // Only the request tells how much data follows a simple reply, and in structured mode a
      // READ must not get one: nothing after it could be framed.
      if (request.type === Command.READ && this.mode !== 'simple') throw new NbdProtocolError(`a simple reply to ${describe(request)} in structured mode`);
      const length = request.type === Command.READ && error === 0 ? request.length : 0;
      return { request, cookie, simple, error, flags: ReplyFlag.DONE, type: 0, length };
    }
    const flags = head.readUInt16BE(4);
    const type = head.readUInt16BE(6);
    const length = this.mode === 'extended' ? readU64(head, 24) : head.readUInt32BE(16);
    const limit = this.chunkLimit(request, type);
    if (length > limit) throw new NbdProtocolError(`a chunk of type ${type} with ${length} bytes for ${describe(request)}, more than the ${limit} it can need`);
    return { request, cookie, simple, error: 0, flags, type, length };
  }

  /** The longest payload a chunk of this type can need for this request. */
  private chunkLimit(request: InFlight, type: number): number {
    if (type === ReplyType.OFFSET_DATA && request.data) return 8 + request.length;
    if (type === ReplyType.BLOCK_STATUS || type === ReplyType.BLOCK_STATUS_EXT) return ClientLimits.MAX_STATUS_PAYLOAD;
    return ClientLimits.MAX_OTHER_PAYLOAD;
  }

  private applySimple(frame: Frame): void {
    const r = frame.request;
    if (frame.length > 0 && r.data) this.copyInto(r.data, 0, frame.length);
    if (r.chunks > 0) this.fail(r, 'a simple reply after structured chunks');
    else if (frame.error !== 0) r.error ??= new NbdRequestError(frame.error, `server replied with error ${frame.error}`);
    this.finish(frame.cookie, r);
  }

  private applyChunk(frame: Frame): void {
    const r = frame.request;
    r.chunks++;
    if (r.error !== null) this.queue.skip(frame.length);
    else if (frame.type === ReplyType.OFFSET_DATA && r.data && frame.length >= 9) this.applyData(r, frame.length);
    else this.applyPayload(r, frame, this.queue.take(frame.length));
    if (frame.flags & ReplyFlag.DONE) this.finish(frame.cookie, r);
    else if (frame.type === ReplyType.NONE) this.fail(r, 'a NONE chunk without the DONE flag');
  }

  /** OFFSET_DATA: the offset is checked before the data is copied into place. */
  private applyData(r: InFlight, length: number): void {
    const offset = readU64(this.queue.take(8), 0);
    const size = length - 8;
    if (!this.recordContent(r, offset, size)) {
      this.queue.skip(size);
      return;
    }
    this.copyInto(r.data!, offset - r.offset, size);
  }

  private copyInto(target: Buffer, at: number, size: number): void {
    const place = target.subarray(at, at + size);
    const got = this.queue.take(size, () => place);
    if (got !== place) got.copy(place);
  }

  private applyPayload(r: InFlight, frame: Frame, payload: Buffer): void {
    switch (frame.type) {
      case ReplyType.NONE:
        if (payload.length !== 0) this.fail(r, `a NONE chunk with ${payload.length} bytes`);
        return;
      case ReplyType.OFFSET_DATA:
        this.fail(r, r.data ? `an OFFSET_DATA chunk of ${payload.length} bytes (at least 9 needed)` : 'an OFFSET_DATA chunk for a request that reads nothing');
        return;
      case ReplyType.OFFSET_HOLE:
        this.applyHole(r, payload);
        return;
      case ReplyType.BLOCK_STATUS:
      case ReplyType.BLOCK_STATUS_EXT:
        this.applyStatus(r, frame.type === ReplyType.BLOCK_STATUS_EXT, payload);
        return;
      default:
        if (frame.type & 0x8000) this.applyError(r, frame.type, payload);
        else this.fail(r, `an unknown chunk type ${frame.type}`);
    }
  }

  private applyHole(r: InFlight, payload: Buffer): void {
    if (!r.data) return this.fail(r, 'an OFFSET_HOLE chunk for a request that reads nothing');
    if (payload.length !== 12) return this.fail(r, `an OFFSET_HOLE chunk of ${payload.length} bytes (12 expected)`);
    const offset = readU64(payload, 0);
    const size = payload.readUInt32BE(8);
    if (size === 0) return this.fail(r, 'an OFFSET_HOLE chunk of size 0');
    if (this.recordContent(r, offset, size)) r.data.fill(0, offset - r.offset, offset - r.offset + size);
  }

  /** Checks a content chunk's range against the request and earlier chunks; false (and the request failed) when it is wrong. */
  private recordContent(r: InFlight, offset: number, size: number): boolean {
    if (r.flags & CommandFlag.DF && r.contentChunks > 0) {
      this.fail(r, 'a second content chunk although DF asked for one');
      return false;
    }
    r.contentChunks++;
    if (offset < r.offset || offset + size > r.offset + r.length) {
      this.fail(r, `content at ${offset}+${size}, outside the request`);
      return false;
    }
    // Real servers send chunks of whole sectors at worst; a hostile one cannot make this list long.
    r.coverage ??= new ReadCoverage(64 + Math.ceil(r.length / 512));
    const result = r.coverage.add(offset - r.offset, offset - r.offset + size);
    if (result === 'ok') return true;
    this.fail(r, result === 'overlap' ? `content at ${offset}+${size} overlaps an earlier chunk` : 'content in too many separate pieces');
    return false;
  }

  private applyStatus(r: InFlight, wide: boolean, payload: Buffer): void {
    if (r.type !== Command.BLOCK_STATUS) return this.fail(r, 'a block status chunk for a request that is not BLOCK_STATUS');
    if (wide !== (this.mode === 'extended')) {
      return this.fail(r, wide ? 'a BLOCK_STATUS_EXT chunk without extended headers' : 'a compact BLOCK_STATUS chunk with extended headers');
    }
    const entry = wide ? 16 : 8;
    const head = wide ? 8 : 4;
    const count = wide ? (payload.length >= 8 ? payload.readUInt32BE(4) : -1) : (payload.length - head) / entry;
    if (count < 1 || !Number.isInteger(count) || payload.length !== head + count * entry) {
      return this.fail(r, `a block status chunk of ${payload.length} bytes that does not hold a whole number (at least one) of extents`);
    }
    const id = payload.readUInt32BE(0);
    if (!this.contexts.has(id)) return this.fail(r, `block status for context id ${id}, which was not selected`);
    if (r.extents.has(id)) return this.fail(r, `a second block status chunk for context id ${id}`);
    if (r.flags & CommandFlag.REQ_ONE && count !== 1) return this.fail(r, `${count} extents although REQ_ONE asked for one`);
    const extents: BlockStatusExtent[] = [];
    const end = r.offset + r.length;
    let pos = r.offset;
    for (let i = 0, at = head; i < count; i++, at += entry) {
      const length = wide ? readU64(payload, at) : payload.readUInt32BE(at);
      const flags = wide ? readU64(payload, at + 8) : payload.readUInt32BE(at + 4);
      if (length === 0) return this.fail(r, 'a block status extent of length 0');
      if (pos >= end) return this.fail(r, `block status extents past the end of the request (${end})`);
      // A last extent that runs past the request (as some servers send) is cut at its end.
      const kept = Math.min(length, end - pos);
      extents.push({ length: kept, flags });
      pos += kept;
    }
    r.extents.set(id, extents);
  }

  private applyError(r: InFlight, type: number, payload: Buffer): void {
    if (payload.length < 6) return this.fail(r, `an error chunk of ${payload.length} bytes (at least 6 needed)`);
    const errno = payload.readUInt32BE(0);
    const messageLength = payload.readUInt16BE(4);
    const tail = type === ReplyType.ERROR_OFFSET ? 8 : 0;
    if (6 + messageLength + tail > payload.length) {
      return this.fail(r, `an error chunk whose message of ${messageLength} bytes does not fit in its ${payload.length} bytes`);
    }
    if (type === ReplyType.ERROR_OFFSET) {
      const offset = readU64(payload, 6 + messageLength);
      if (offset < r.offset || offset >= r.offset + Math.max(r.length, 1)) return this.fail(r, `an error at offset ${offset}, outside the request`);
    }
    if (errno === 0) return this.fail(r, 'an error chunk with error number 0');
    const message = payload.toString('utf8', 6, 6 + messageLength);
    r.error = new NbdRequestError(errno, message || `server replied with error ${errno}`);
  }

  private fail(r: InFlight, what: string): void {
    r.error ??= new NbdProtocolError(`the server sent ${what} in the reply to ${describe(r)}`);
  }

  private finish(cookie: bigint, r: InFlight): void {
    this.inFlight.delete(cookie);
    if (r.error === null && r.type === Command.READ && this.mode !== 'simple') {
      const covered = r.coverage?.covered ?? 0;
      if (covered !== r.length) this.fail(r, `DONE after ${covered} of ${r.length} bytes`);
    }
    if (r.error === null && r.type === Command.BLOCK_STATUS) {
      // Exactly one status chunk per selected context.
      const missing = [...this.contexts.keys()].filter((id) => !r.extents.has(id));
      if (missing.length > 0) this.fail(r, `DONE without block status for context id ${missing.join(', ')}`);
    }
    r.settle(r.error);
  }
}
