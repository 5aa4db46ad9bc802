/**
 * Transmission-phase wire format: request headers in, reply headers out (and the reverse,
 * for the client). Pure functions over Buffers; nothing here knows about sockets or images.
 *
 * 64-bit offsets and lengths are read as two 32-bit halves into a number. Values above 2^53
 * lose precision but stay larger than any export, so bounds checks still reject them.
 */
import { Magic, ReplyFlag, ReplyType, Size } from './constants.js';

const TWO_32 = 4294967296;

export function readU64(buf: Buffer, pos: number): number {
  return buf.readUInt32BE(pos) * TWO_32 + buf.readUInt32BE(pos + 4);
}

export function writeU64(buf: Buffer, value: number, pos: number): void {
  buf.writeUInt32BE(Math.floor(value / TWO_32), pos);
  buf.writeUInt32BE(value % TWO_32, pos + 4);
}

export interface RequestHeader {
  flags: number;
  type: number;
  cookie: bigint;
  offset: number;
  /** Effect length, or payload length for WRITE (and PAYLOAD_LEN in extended mode). */
  length: number;
}

/** Size of a request header in the negotiated mode. */
export function requestHeaderSize(extended: boolean): number {
  return extended ? Size.EXTENDED_REQUEST : Size.REQUEST;
}

/** A request as the server handles it: the header, and the WRITE payload that follows it. */
export interface DecodedRequest extends RequestHeader {
  /** WRITE data (empty for every other command until the reader sets it). */
  payload: Buffer;
  /** The payload was copied into a buffer from an allocator (the caller may recycle it). */
  payloadCopied: boolean;
}

const NO_PAYLOAD = Buffer.alloc(0);

/**
 * Decodes a request header at `pos`. Returns null if the magic is wrong for the mode, which
 * the caller must treat as a fatal protocol error (the stream cannot be resynchronised). The
 * object has its payload fields already (empty), so that the request reader fills them in
 * without changing the object's shape: one object per request, one hidden class.
 */
export function decodeRequestHeader(buf: Buffer, pos: number, extended: boolean): DecodedRequest | null {
  const magic = buf.readUInt32BE(pos);
  if (magic !== (extended ? Magic.EXTENDED_REQUEST : Magic.REQUEST)) return null;
  return {
    flags: buf.readUInt16BE(pos + 4),
    type: buf.readUInt16BE(pos + 6),
    cookie: buf.readBigUInt64BE(pos + 8),
    offset: readU64(buf, pos + 16),
    length: extended ? readU64(buf, pos + 24) : buf.readUInt32BE(pos + 24),
    payload: NO_PAYLOAD,
    payloadCopied: false,
  };
}

export function encodeRequestHeader(header: RequestHeader, extended: boolean): Buffer {
  const buf = Buffer.allocUnsafe(requestHeaderSize(extended));
  buf.writeUInt32BE(extended ? Magic.EXTENDED_REQUEST : Magic.REQUEST, 0);
  buf.writeUInt16BE(header.flags, 4);
  buf.writeUInt16BE(header.type, 6);
  buf.writeBigUInt64BE(header.cookie, 8);
  writeU64(buf, header.offset, 16);
  if (extended) writeU64(buf, header.length, 24);
  else buf.writeUInt32BE(header.length, 24);
  return buf;
}

/** Which reply headers a connection uses, fixed at the end of negotiation. */
export type ReplyMode = 'simple' | 'structured' | 'extended';

export function writeSimpleReplyHeader(buf: Buffer, pos: number, error: number, cookie: bigint): void {
  buf.writeUInt32BE(Magic.SIMPLE_REPLY, pos);
  buf.writeUInt32BE(error, pos + 4);
  buf.writeBigUInt64BE(cookie, pos + 8);
}

/** Size of a chunk header: structured (20 bytes) or extended (32 bytes). */
export function chunkHeaderSize(mode: ReplyMode): number {
  return mode === 'extended' ? Size.EXTENDED_REPLY : Size.STRUCTURED_REPLY;
}

export interface ChunkHeader {
  flags: number;
  type: number;
  cookie: bigint;
  /** The request's offset; only extended headers carry it. */
  requestOffset: number;
  length: number;
}

/** Writes a structured or extended chunk header at `pos`. */
export function writeChunkHeader(buf: Buffer, pos: number, mode: ReplyMode, h: ChunkHeader): void {
  if (mode === 'extended') {
    buf.writeUInt32BE(Magic.EXTENDED_REPLY, pos);
    buf.writeUInt16BE(h.flags, pos + 4);
    buf.writeUInt16BE(h.type, pos + 6);
    buf.writeBigUInt64BE(h.cookie, pos + 8);
    writeU64(buf, h.requestOffset, pos + 16);
    writeU64(buf, h.length, pos + 24);
  } else {
    buf.writeUInt32BE(Magic.STRUCTURED_REPLY, pos);
    buf.writeUInt16BE(h.flags, pos + 4);
    buf.writeUInt16BE(h.type, pos + 6);
    buf.writeBigUInt64BE(h.cookie, pos + 8);
    buf.writeUInt32BE(h.length, pos + 16);
  }
}

/** A whole error chunk (ERROR type, DONE set) with a human-readable message. */
export function encodeErrorChunk(mode: ReplyMode, cookie: bigint, requestOffset: number, error: number, message: string): Buffer {
  const text = Buffer.from(message.slice(0, 1024), 'utf8');
  const head = chunkHeaderSize(mode);
  const buf = Buffer.allocUnsafe(head + 6 + text.length);
  writeChunkHeader(buf, 0, mode, {
    flags: ReplyFlag.DONE,
    type: ReplyType.ERROR,
    cookie,
    requestOffset,
    length: 6 + text.length,
  });
  buf.writeUInt32BE(error, head);
  buf.writeUInt16BE(text.length, head + 4);
  text.copy(buf, head + 6);
  return buf;
}

/** A NONE chunk with DONE: the success reply of a command without payload. */
export function encodeDoneChunk(mode: ReplyMode, cookie: bigint, requestOffset: number): Buffer {
  const buf = Buffer.allocUnsafe(chunkHeaderSize(mode));
  writeChunkHeader(buf, 0, mode, { flags: ReplyFlag.DONE, type: ReplyType.NONE, cookie, requestOffset, length: 0 });
  return buf;
}

export function encodeSimpleReply(cookie: bigint, error: number): Buffer {
  const buf = Buffer.allocUnsafe(Size.SIMPLE_REPLY);
  writeSimpleReplyHeader(buf, 0, error, cookie);
  return buf;
}

/** One block status descriptor: a length and the context's status bits. */
export interface StatusExtent {
  length: number;
  flags: number;
}

/** A BLOCK_STATUS (compact) or BLOCK_STATUS_EXT (extended) chunk for one context. */
export function encodeBlockStatusChunk(
  mode: ReplyMode,
  cookie: bigint,
  requestOffset: number,
  contextId: number,
  extents: readonly StatusExtent[],
  done: boolean,
): Buffer {
  const head = chunkHeaderSize(mode);
  const extended = mode === 'extended';
  const payload = extended ? 8 + 16 * extents.length : 4 + 8 * extents.length;
  const buf = Buffer.allocUnsafe(head + payload);
  writeChunkHeader(buf, 0, mode, {
    flags: done ? ReplyFlag.DONE : 0,
    type: extended ? ReplyType.BLOCK_STATUS_EXT : ReplyType.BLOCK_STATUS,
    cookie,
    requestOffset,
    length: payload,
  });
  buf.writeUInt32BE(contextId, head);
  let pos = head + 4;
  if (extended) {
    buf.writeUInt32BE(extents.length, pos);
    pos += 4;
    for (const e of extents) {
      writeU64(buf, e.length, pos);
      writeU64(buf, e.flags, pos + 8);
      pos += 16;
    }
  } else {
    for (const e of extents) {
      buf.writeUInt32BE(e.length, pos);
      buf.writeUInt32BE(e.flags, pos + 4);
      pos += 8;
    }
  }
  return buf;
}

/** An OFFSET_HOLE chunk (never DONE: the caller ends the reply separately or marks a later chunk). */
export function encodeHoleChunk(mode: ReplyMode, cookie: bigint, requestOffset: number, offset: number, length: number, done: boolean): Buffer {
  const head = chunkHeaderSize(mode);
  const buf = Buffer.allocUnsafe(head + 12);
  writeChunkHeader(buf, 0, mode, {
    flags: done ? ReplyFlag.DONE : 0,
    type: ReplyType.OFFSET_HOLE,
    cookie,
    requestOffset,
    length: 12,
  });
  writeU64(buf, offset, head);
  buf.writeUInt32BE(length, head + 8);
  return buf;
}

/** Room needed in front of read data for an OFFSET_DATA chunk header and its offset field. */
export function dataChunkPrefixSize(mode: ReplyMode): number {
  return chunkHeaderSize(mode) + 8;
}

/** Writes an OFFSET_DATA chunk header + offset field so that data follows at `pos + prefix`. */
export function writeDataChunkPrefix(
  buf: Buffer,
  pos: number,
  mode: ReplyMode,
  cookie: bigint,
  requestOffset: number,
  offset: number,
  dataLength: number,
  done: boolean,
): void {
  writeChunkHeader(buf, pos, mode, {
    flags: done ? ReplyFlag.DONE : 0,
    type: ReplyType.OFFSET_DATA,
    cookie,
    requestOffset,
    length: dataLength + 8,
  });
  writeU64(buf, offset, pos + chunkHeaderSize(mode));
}
