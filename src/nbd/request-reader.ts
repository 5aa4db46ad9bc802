/**
 * Splits the transmission-phase byte stream into requests: a header, then the payload when the
 * request carries one. Bytes may arrive cut anywhere; `next` returns a request only when all of
 * it is there.
 *
 * Two ways in:
 * - `push` keeps the chunk; payloads that lie in one chunk come out as views of it;
 * - `pushTransient` takes bytes valid only during the call (a socket reading into one reused
 *   buffer): it parses them at once, copying each payload once into a buffer from the
 *   allocator and any cut-off header into a small carry buffer, and keeps no reference.
 *   A large payload's rest can be read straight into place instead (`directTarget`,
 *   `receivedDirect`): the copy is then only of the part that came with its header.
 */
import { ByteQueue } from './byte-queue.js';
import { Command, CommandFlag, Limits } from './constants.js';
import { decodeRequestHeader, requestHeaderSize, type DecodedRequest } from './codec.js';

export type ParsedRequest = DecodedRequest;

/** The stream cannot be read on: the connection must be closed. */
export class RequestStreamError extends Error {
  override name = 'RequestStreamError';
}

const EMPTY = Buffer.alloc(0);

/** The decoded header becomes the request (one object per request, not two). */
function withPayload(request: DecodedRequest, payload: Buffer, payloadCopied: boolean): ParsedRequest {
  request.payload = payload;
  request.payloadCopied = payloadCopied;
  return request;
}

export class RequestReader {
  private readonly queue = new ByteQueue();
  private header: DecodedRequest | null = null;
  private readonly headerSize: number;
  /** Requests parsed from transient input, oldest first. */
  private readonly ready: ParsedRequest[] = [];
  /** Transient input: header bytes cut off at the end of a chunk. */
  private readonly carry: Buffer;
  private carryFill = 0;
  /** Transient input: the payload being filled. */
  private payload: Buffer | null = null;
  private payloadFill = 0;

  constructor(
    private readonly extended: boolean,
    /** Where payloads that straddle received chunks are assembled. */
    private readonly allocate: (size: number) => Buffer = Buffer.allocUnsafe,
  ) {
    this.headerSize = requestHeaderSize(extended);
    this.carry = Buffer.alloc(this.headerSize);
  }

  push(chunk: Buffer): void {
    this.queue.push(chunk);
  }

  /** Bytes received but not yet returned as part of a request. */
  get buffered(): number {
    return this.queue.length + this.carryFill + this.payloadFill;
  }

  /** Parses `chunk` now; nothing refers to it afterwards. Throws RequestStreamError. */
  pushTransient(chunk: Buffer): void {
    if (this.queue.length > 0) {
      // Kept input is still waiting: keep order by keeping a copy of this too.
      this.queue.push(Buffer.from(chunk));
      return;
    }
    let pos = 0;
    while (pos < chunk.length) {
      if (!this.header) {
        let header: DecodedRequest | null;
        if (this.carryFill === 0 && chunk.length - pos >= this.headerSize) {
          header = decodeRequestHeader(chunk, pos, this.extended);
          pos += this.headerSize;
        } else {
          const n = Math.min(this.headerSize - this.carryFill, chunk.length - pos);
          chunk.copy(this.carry, this.carryFill, pos, pos + n);
          this.carryFill += n;
          pos += n;
          if (this.carryFill < this.headerSize) return;
          this.carryFill = 0;
          header = decodeRequestHeader(this.carry, 0, this.extended);
        }
        if (!header) throw new RequestStreamError('bad request magic');
        const length = this.checkedPayloadLength(header);
        if (length === 0) {
          this.ready.push(withPayload(header, EMPTY, false));
          continue;
        }
        this.header = header;
        this.payload = this.allocate(length);
        this.payloadFill = 0;
      }
      const payload = this.payload!;
      const n = Math.min(payload.length - this.payloadFill, chunk.length - pos);
      chunk.copy(payload, this.payloadFill, pos, pos + n);
      pos += n;
      this.filled(n);
    }
  }

  /**
   * Transient input: the unfilled rest of the payload being assembled, for the next read to go
   * into directly (no copy), when at least `min` bytes of it are missing; otherwise null. The
   * view ends where the payload does, so such a read never takes bytes of the next request.
   */
  directTarget(min: number): Buffer | null {
    const payload = this.payload;
    if (!payload || this.queue.length > 0 || payload.length - this.payloadFill < min) return null;
    return payload.subarray(this.payloadFill);
  }

  /**
   * Transient input: `n` bytes were read into `target`, a view `directTarget` returned. False
   * (and nothing changed) when the reader has moved on since, e.g. it was cleared.
   */
  receivedDirect(target: Buffer, n: number): boolean {
    const payload = this.payload;
    if (!payload || target.buffer !== payload.buffer || target.byteOffset !== payload.byteOffset + this.payloadFill) return false;
    if (n > payload.length - this.payloadFill) return false;
    this.filled(n);
    return true;
  }

  /** `n` more payload bytes are in place; a full payload makes its request ready. */
  private filled(n: number): void {
    this.payloadFill += n;
    if (this.payloadFill === this.payload!.length) {
      this.ready.push(withPayload(this.header!, this.payload!, true));
      this.header = null;
      this.payload = null;
      this.payloadFill = 0;
    }
  }

  /** The next whole request, or null when more bytes are needed. */
  next(): ParsedRequest | null {
    const parsed = this.ready.shift();
    if (parsed) return parsed;
    if (!this.header) {
      if (this.queue.length < this.headerSize) return null;
      const header = decodeRequestHeader(this.queue.take(this.headerSize), 0, this.extended);
      if (!header) throw new RequestStreamError('bad request magic');
      this.header = header;
    }
    const header = this.header;
    const payloadLength = this.checkedPayloadLength(header);
    if (this.queue.length < payloadLength) return null;
    this.header = null;
    if (payloadLength === 0) return withPayload(header, EMPTY, false);
    let copied = false;
    const payload = this.queue.take(payloadLength, (size) => {
      copied = true;
      return this.allocate(size);
    });
    return withPayload(header, payload, copied);
  }

  /** The payload length that follows `header`; an absurd one cannot be skipped safely. */
  private checkedPayloadLength(header: DecodedRequest): number {
    let length = 0;
    if (this.extended) length = (header.flags & CommandFlag.PAYLOAD_LEN) !== 0 ? header.length : 0;
    else length = header.type === Command.WRITE ? header.length : 0;
    if (length > Limits.MAX_PAYLOAD_HARD) {
      throw new RequestStreamError(`request payload of ${length} bytes (limit ${Limits.MAX_PAYLOAD_HARD})`);
    }
    return length;
  }

  clear(): void {
    this.queue.clear();
    this.header = null;
    this.ready.length = 0;
    this.carryFill = 0;
    this.payload = null;
    this.payloadFill = 0;
  }
}
