/**
 * Handshake-phase wire format (fixed newstyle): the greeting, options and option replies, and
 * the payloads of INFO/GO, LIST and the metadata-context options. Pure functions; both the
 * server's negotiation and the client use them.
 */
import { HandshakeFlag, Info, Limits, Magic, Size } from './constants.js';
import { writeU64 } from './codec.js';

/** A malformed option payload: answered with ERR_INVALID, the connection goes on. */
export class OptionFormatError extends Error {
  override name = 'OptionFormatError';
}

export function encodeGreeting(): Buffer {
  const buf = Buffer.allocUnsafe(Size.GREETING);
  buf.writeBigUInt64BE(Magic.NBDMAGIC, 0);
  buf.writeBigUInt64BE(Magic.IHAVEOPT, 8);
  buf.writeUInt16BE(HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES, 16);
  return buf;
}

export interface OptionHeader {
  option: number;
  length: number;
}

/** Decodes the 16-byte option header; null when the magic is not IHAVEOPT. */
export function decodeOptionHeader(buf: Buffer): OptionHeader | null {
  if (buf.readBigUInt64BE(0) !== Magic.IHAVEOPT) return null;
  return { option: buf.readUInt32BE(8), length: buf.readUInt32BE(12) };
}

export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.allocUnsafe(Size.OPTION_HEADER + data.length);
  buf.writeBigUInt64BE(Magic.IHAVEOPT, 0);
  buf.writeUInt32BE(option, 8);
  buf.writeUInt32BE(data.length, 12);
  data.copy(buf, Size.OPTION_HEADER);
  return buf;
}

export function encodeOptionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.allocUnsafe(Size.OPTION_REPLY_HEADER + data.length);
  buf.writeBigUInt64BE(Magic.OPTION_REPLY, 0);
  buf.writeUInt32BE(option, 8);
  buf.writeUInt32BE(type, 12);
  buf.writeUInt32BE(data.length, 16);
  data.copy(buf, Size.OPTION_REPLY_HEADER);
  return buf;
}

export interface OptionReplyHeader {
  option: number;
  type: number;
  length: number;
}

export function decodeOptionReplyHeader(buf: Buffer): OptionReplyHeader | null {
  if (buf.readBigUInt64BE(0) !== Magic.OPTION_REPLY) return null;
  return { option: buf.readUInt32BE(8), type: buf.readUInt32BE(12), length: buf.readUInt32BE(16) };
}

export function isErrorReply(type: number): boolean {
  return (type & 0x80000000) !== 0;
}

/** The reply to EXPORT_NAME: size, flags, and 124 zero bytes unless NO_ZEROES was agreed. */
export function encodeExportNameReply(size: number, flags: number, noZeroes: boolean): Buffer {
  const buf = Buffer.alloc(10 + (noZeroes ? 0 : Size.EXPORT_NAME_PADDING));
  writeU64(buf, size, 0);
  buf.writeUInt16BE(flags, 8);
  return buf;
}

/** Reads a u32-length-prefixed UTF-8 string; checks it fits in what is left and is not too long. */
function readString(data: Buffer, pos: number, what: string): { value: string; next: number } {
  if (pos + 4 > data.length) throw new OptionFormatError(`${what}: length field cut short`);
  const len = data.readUInt32BE(pos);
  if (len > Limits.MAX_STRING) throw new OptionFormatError(`${what}: longer than ${Limits.MAX_STRING} bytes`);
  if (pos + 4 + len > data.length) throw new OptionFormatError(`${what}: longer than the option`);
  return { value: data.toString('utf8', pos + 4, pos + 4 + len), next: pos + 4 + len };
}

function encodeString(value: string): Buffer {
  const bytes = Buffer.from(value, 'utf8');
  const buf = Buffer.allocUnsafe(4 + bytes.length);
  buf.writeUInt32BE(bytes.length, 0);
  bytes.copy(buf, 4);
  return buf;
}

export interface InfoRequest {
  name: string;
  infos: number[];
}

/** INFO and GO: u32 name length, name, u16 count, count × u16 info types, nothing after. */
export function decodeInfoRequest(data: Buffer): InfoRequest {
  if (data.length < 6) throw new OptionFormatError('option shorter than 6 bytes');
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 6) throw new OptionFormatError('export name longer than the option');
  const { value: name, next } = readString(data, 0, 'export name');
  const count = data.readUInt16BE(next);
  if (next + 2 + count * 2 !== data.length) throw new OptionFormatError('information request count does not match the option length');
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(data.readUInt16BE(next + 2 + i * 2));
  return { name, infos };
}

export function encodeInfoRequest(request: InfoRequest): Buffer {
  const name = encodeString(request.name);
  const tail = Buffer.allocUnsafe(2 + request.infos.length * 2);
  tail.writeUInt16BE(request.infos.length, 0);
  request.infos.forEach((info, i) => tail.writeUInt16BE(info, 2 + i * 2));
  return Buffer.concat([name, tail]);
}

export interface MetaContextRequest {
  name: string;
  queries: string[];
}

/** LIST_META_CONTEXT and SET_META_CONTEXT: export name, u32 count, count × string. */
export function decodeMetaContextRequest(data: Buffer): MetaContextRequest {
  const { value: name, next } = readString(data, 0, 'export name');
  if (next + 4 > data.length) throw new OptionFormatError('query count cut short');
  const count = data.readUInt32BE(next);
  let pos = next + 4;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    const q = readString(data, pos, 'query');
    queries.push(q.value);
    pos = q.next;
  }
  if (pos !== data.length) throw new OptionFormatError('bytes left over after the last query');
  return { name, queries };
}

export function encodeMetaContextRequest(request: MetaContextRequest): Buffer {
  const count = Buffer.allocUnsafe(4);
  count.writeUInt32BE(request.queries.length, 0);
  return Buffer.concat([encodeString(request.name), count, ...request.queries.map(encodeString)]);
}

/** REP_SERVER payload for LIST: u32 name length, name, then the description. */
export function encodeServerReply(name: string, description: string): Buffer {
  return Buffer.concat([encodeString(name), Buffer.from(description, 'utf8')]);
}

export function decodeServerReply(data: Buffer): { name: string; description: string } {
  const { value: name, next } = readString(data, 0, 'export name');
  return { name, description: data.toString('utf8', next) };
}

/** REP_META_CONTEXT payload: u32 context id, then the name. */
export function encodeMetaContextReply(id: number, name: string): Buffer {
  const bytes = Buffer.from(name, 'utf8');
  const buf = Buffer.allocUnsafe(4 + bytes.length);
  buf.writeUInt32BE(id, 0);
  bytes.copy(buf, 4);
  return buf;
}

export function decodeMetaContextReply(data: Buffer): { id: number; name: string } {
  if (data.length < 4) throw new OptionFormatError('meta context reply shorter than 4 bytes');
  if (data.length - 4 > Limits.MAX_STRING) throw new OptionFormatError(`meta context name of ${data.length - 4} bytes, longer than ${Limits.MAX_STRING}`);
  return { id: data.readUInt32BE(0), name: data.toString('utf8', 4) };
}

export function encodeInfoExport(size: number, flags: number): Buffer {
  const buf = Buffer.allocUnsafe(12);
  buf.writeUInt16BE(Info.EXPORT, 0);
  writeU64(buf, size, 2);
  buf.writeUInt16BE(flags, 10);
  return buf;
}

export interface BlockSizeConstraints {
  minimum: number;
  preferred: number;
  maximum: number;
}

export function encodeInfoBlockSize(c: BlockSizeConstraints): Buffer {
  const buf = Buffer.allocUnsafe(14);
  buf.writeUInt16BE(Info.BLOCK_SIZE, 0);
  buf.writeUInt32BE(c.minimum, 2);
  buf.writeUInt32BE(c.preferred, 6);
  buf.writeUInt32BE(c.maximum, 10);
  return buf;
}

/** NAME or DESCRIPTION info: u16 type, then the string to the end of the reply. */
export function encodeInfoText(type: typeof Info.NAME | typeof Info.DESCRIPTION, text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  const buf = Buffer.allocUnsafe(2 + bytes.length);
  buf.writeUInt16BE(type, 0);
  bytes.copy(buf, 2);
  return buf;
}

/** What a client learns from the REP_INFO replies of INFO/GO. */
export interface ExportInfo {
  size: number;
  flags: number;
  name?: string;
  description?: string;
  blockSize?: BlockSizeConstraints;
}

/**
 * Problems with block size constraints, or null when they are valid: a power-of-two minimum up
 * to 64 KiB, a power-of-two preferred size not below it, and a maximum payload that is a
 * multiple of the minimum (or 0xffffffff, "no limit").
 */
export function blockSizeProblem(c: BlockSizeConstraints): string | null {
  const powerOfTwo = (n: number): boolean => n >= 1 && Number.isInteger(Math.log2(n));
  if (!powerOfTwo(c.minimum) || c.minimum > 65536) return `minimum block size ${c.minimum} is not a power of two up to 64 KiB`;
  if (!powerOfTwo(c.preferred) || c.preferred < c.minimum) return `preferred block size ${c.preferred} is not a power of two at least the minimum ${c.minimum}`;
  if (c.maximum !== 0xffffffff && (c.maximum < c.minimum || c.maximum % c.minimum !== 0)) {
    return `maximum payload ${c.maximum} is not a multiple of the minimum block size ${c.minimum}`;
  }
  return null;
}

/**
 * Folds one REP_INFO payload into `info`; unknown info types are ignored, as the spec says.
 * Known types must have their exact lengths, and an export must not change its size or flags
 * between the replies of one negotiation (INFO, then GO).
 */
export function applyInfoReply(info: Partial<ExportInfo>, data: Buffer): void {
  if (data.length < 2) throw new OptionFormatError('info reply shorter than 2 bytes');
  const type = data.readUInt16BE(0);
  if (type === Info.EXPORT) {
    if (data.length !== 12) throw new OptionFormatError(`INFO_EXPORT of ${data.length} bytes (12 expected)`);
    const size = data.readUInt32BE(2) * 4294967296 + data.readUInt32BE(6);
    const flags = data.readUInt16BE(10);
    if (!Number.isSafeInteger(size)) throw new OptionFormatError(`export size ${size} is beyond 2^53`);
    if (info.size !== undefined && (info.size !== size || info.flags !== flags)) {
      throw new OptionFormatError(`the export changed from ${info.size} bytes (flags 0x${info.flags?.toString(16)}) to ${size} bytes (flags 0x${flags.toString(16)}) during negotiation`);
    }
    info.size = size;
    info.flags = flags;
  } else if (type === Info.NAME || type === Info.DESCRIPTION) {
    if (data.length - 2 > Limits.MAX_STRING) throw new OptionFormatError(`info text of ${data.length - 2} bytes, longer than ${Limits.MAX_STRING}`);
    if (type === Info.NAME) info.name = data.toString('utf8', 2);
    else info.description = data.toString('utf8', 2);
  } else if (type === Info.BLOCK_SIZE) {
    if (data.length !== 14) throw new OptionFormatError(`INFO_BLOCK_SIZE of ${data.length} bytes (14 expected)`);
    const blockSize = { minimum: data.readUInt32BE(2), preferred: data.readUInt32BE(6), maximum: data.readUInt32BE(10) };
    const problem = blockSizeProblem(blockSize);
    if (problem) throw new OptionFormatError(problem);
    info.blockSize = blockSize;
  }
}
