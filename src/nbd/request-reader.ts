/**
 * Splits the transmission-phase byte stream into requests: a header, then the payload when the
 * request carries one. Bytes may arrive cut anywhere; `next` returns a request only when all of
 * it is there. Payloads the socket delivered in one piece are views, not copies.
 */
import { ByteQueue } from './byte-queue.js';
import { Command, CommandFlag, Limits } from './constants.js';
import { decodeRequestHeader, requestHeaderSize, type RequestHeader } from './codec.js';

export interface ParsedRequest extends RequestHeader {
  payload: Buffer;
  /** The payload was copied into a buffer from the allocator (the caller may recycle it). */
  payloadCopied: boolean;
}

/** The stream cannot be read on: the connection must be closed. */
export class RequestStreamError extends Error {
  override name = 'RequestStreamError';
}

const EMPTY = Buffer.alloc(0);

export class RequestReader {
  private readonly queue = new ByteQueue();
  private header: RequestHeader | null = null;
  private readonly headerSize: number;

  constructor(
    private readonly extended: boolean,
    /** Where payloads that straddle received chunks are assembled. */
    private readonly allocate: (size: number) => Buffer = Buffer.allocUnsafe,
  ) {
    this.headerSize = requestHeaderSize(extended);
  }

  push(chunk: Buffer): void {
    this.queue.push(chunk);
  }

  /** Bytes received but not yet returned as part of a request. */
  get buffered(): number {
    return this.queue.length;
  }

  /** The next whole request, or null when more bytes are needed. */
  next(): ParsedRequest | null {
    if (!this.header) {
      if (this.queue.length < this.headerSize) return null;
      const header = decodeRequestHeader(this.queue.take(this.headerSize), 0, this.extended);
      if (!header) throw new RequestStreamError('bad request magic');
      this.header = header;
    }
    const header = this.header;
    const payloadLength = this.payloadLength(header);
    if (payloadLength > Limits.MAX_PAYLOAD_HARD) {
      throw new RequestStreamError(`request payload of ${payloadLength} bytes (limit ${Limits.MAX_PAYLOAD_HARD})`);
    }
    if (this.queue.length < payloadLength) return null;
    this.header = null;
    if (payloadLength === 0) return { ...header, payload: EMPTY, payloadCopied: false };
    let copied = false;
    const payload = this.queue.take(payloadLength, (size) => {
      copied = true;
      return this.allocate(size);
    });
    return { ...header, payload, payloadCopied: copied };
  }

  private payloadLength(header: RequestHeader): number {
    if (this.extended) return (header.flags & CommandFlag.PAYLOAD_LEN) !== 0 ? header.length : 0;
    return header.type === Command.WRITE ? header.length : 0;
  }

  clear(): void {
    this.queue.clear();
    this.header = null;
  }
}
