/**
 * The client's half of fixed-newstyle negotiation, over any byte stream (`HandshakeIo`): the
 * greeting, STARTTLS, extended headers or structured replies, metadata contexts, INFO/GO (or the
 * old EXPORT_NAME), and LIST.
 *
 * Nothing the server sends is trusted: magics are checked, every reply length is capped before
 * the bytes are read, a reply must answer the option just sent and be of a type that option
 * allows, ACKs carry no data, the number of replies to one option is bounded, INFO replies have
 * their exact lengths and an export may not change size or flags between INFO and GO, and a
 * metadata context the server selects must be one that was asked for, with a unique id.
 * Violations are NbdProtocolError; refusals are NbdOptionError.
 */
import { NbdOptionError, NbdProtocolError } from './client-errors.js';
import { readU64, type ReplyMode } from './codec.js';
import { ClientFlag, ClientLimits, HandshakeFlag, Info, Magic, Option, OptionReply, Size, TransmissionFlag } from './constants.js';
import {
  applyInfoReply,
  decodeMetaContextReply,
  decodeOptionReplyHeader,
  decodeServerReply,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  isErrorReply,
  OptionFormatError,
  type ExportInfo,
} from './handshake.js';

/** The stream negotiation runs over; the client supplies it. */
export interface HandshakeIo {
  /** Exactly `n` bytes (n is always capped by the caller), or a rejection when the stream ends. */
  read(n: number): Promise<Buffer>;
  write(data: Buffer): void;
  /** Switches the stream to TLS after STARTTLS's ACK; rejects if the server left bytes unread before it. */
  startTls(): Promise<void>;
}

/** What a client asks for during negotiation. */
export interface NegotiationChoices {
  /** Ask for structured replies (default true). */
  structuredReplies?: boolean;
  /** Ask for extended headers first (default false); falls back if the server refuses. */
  extendedHeaders?: boolean;
  /** Metadata contexts to select (default none). */
  metaContexts?: string[];
  /** Send INFO before GO, as Apple's client does on newer macOS. */
  infoBeforeGo?: boolean;
  /** Use the old EXPORT_NAME option instead of GO. */
  useExportName?: boolean;
  /** Ask the server to leave out the 124 zero bytes after EXPORT_NAME (default true). */
  noZeroes?: boolean;
}

export interface NegotiateOptions extends NegotiationChoices {
  exportName: string;
  /** STARTTLS before anything else. */
  tls?: boolean;
}

export interface Negotiated {
  info: ExportInfo;
  mode: ReplyMode;
  /** Selected metadata contexts: id → name. */
  contexts: Map<number, string>;
}

/** Which reply types (besides ACK and errors) each option may get. */
const DATA_REPLY_OF: Readonly<Record<number, number>> = {
  [Option.LIST]: OptionReply.SERVER,
  [Option.INFO]: OptionReply.INFO,
  [Option.GO]: OptionReply.INFO,
  [Option.LIST_META_CONTEXT]: OptionReply.META_CONTEXT,
  [Option.SET_META_CONTEXT]: OptionReply.META_CONTEXT,
};

function nameOf(table: Readonly<Record<string, number>>, value: number): string {
  return Object.entries(table).find(([, v]) => v === value)?.[0] ?? `0x${value.toString(16)}`;
}

/** Reads the greeting and answers it; returns the client flags sent. */
export async function greet(io: HandshakeIo, noZeroes: boolean): Promise<number> {
  const greeting = await io.read(Size.GREETING);
  if (greeting.readBigUInt64BE(0) !== Magic.NBDMAGIC) throw new NbdProtocolError('not an NBD server (no NBDMAGIC in the greeting)');
  if (greeting.readBigUInt64BE(8) !== Magic.IHAVEOPT) throw new NbdProtocolError('not a newstyle NBD server (oldstyle negotiation is not supported)');
  const serverFlags = greeting.readUInt16BE(16);
  if (!(serverFlags & HandshakeFlag.FIXED_NEWSTYLE)) throw new NbdProtocolError('the server does not speak fixed newstyle negotiation');
  let clientFlags = ClientFlag.FIXED_NEWSTYLE;
  if (noZeroes && serverFlags & HandshakeFlag.NO_ZEROES) clientFlags |= ClientFlag.NO_ZEROES;
  const buf = Buffer.allocUnsafe(4);
  buf.writeUInt32BE(clientFlags, 0);
  io.write(buf);
  return clientFlags;
}

/** Sends an option and reads its replies until ACK (resolves) or an error reply (rejects with NbdOptionError). */
export async function exchangeOption(io: HandshakeIo, option: number, data: Buffer, onReply: (type: number, data: Buffer) => void): Promise<void> {
  io.write(encodeOption(option, data));
  for (let replies = 0; ; replies++) {
    const header = decodeOptionReplyHeader(await io.read(Size.OPTION_REPLY_HEADER));
    if (!header) throw new NbdProtocolError(`bad option reply magic in the reply to option ${option}`);
    if (header.option !== option) throw new NbdProtocolError(`a reply to option ${header.option} while option ${option} was asked`);
    if (header.length > ClientLimits.MAX_OPTION_REPLY) throw new NbdProtocolError(`an option reply of ${header.length} bytes (at most ${ClientLimits.MAX_OPTION_REPLY})`);
    if (replies >= ClientLimits.MAX_OPTION_REPLIES) throw new NbdProtocolError(`more than ${ClientLimits.MAX_OPTION_REPLIES} replies to option ${option}`);
    const payload = await io.read(header.length);
    if (isErrorReply(header.type)) {
      const text = payload.toString('utf8');
      const what = `option ${nameOf(Option, option)} refused (${nameOf(OptionReply, header.type)}, 0x${header.type.toString(16)})`;
      throw new NbdOptionError(option, header.type, `${what}${text ? `: ${text}` : ''}`);
    }
    if (header.type === OptionReply.ACK) {
      if (payload.length !== 0) throw new NbdProtocolError(`an ACK with ${payload.length} bytes of data to option ${option}`);
      return;
    }
    if (DATA_REPLY_OF[option] !== header.type) throw new NbdProtocolError(`a reply of type ${header.type} to option ${option}, which does not take one`);
    try {
      onReply(header.type, payload);
    } catch (err) {
      if (err instanceof OptionFormatError) throw new NbdProtocolError(`a malformed reply to option ${option}: ${err.message}`);
      throw err;
    }
  }
}

/** True when the server acknowledged the option, false when it refused it. */
function optional(io: HandshakeIo, option: number): Promise<boolean> {
  return exchangeOption(io, option, Buffer.alloc(0), () => undefined).then(
    () => true,
    (err: unknown) => {
      if (err instanceof NbdOptionError) return false;
      throw err;
    },
  );
}

/** Selects the contexts the server has; a server without metadata contexts selects none (an unknown export stays an error). */
async function selectContexts(io: HandshakeIo, exportName: string, queries: string[]): Promise<Map<number, string>> {
  const contexts = new Map<number, string>();
  const request = encodeMetaContextRequest({ name: exportName, queries });
  try {
    await exchangeOption(io, Option.SET_META_CONTEXT, request, (_type, data) => {
      const { id, name } = decodeMetaContextReply(data);
      if (!queries.includes(name)) throw new OptionFormatError(`context ${JSON.stringify(name)} was not asked for`);
      if (contexts.has(id)) throw new OptionFormatError(`context id ${id} given twice`);
      contexts.set(id, name);
    });
  } catch (err) {
    if (err instanceof NbdOptionError && err.replyType !== OptionReply.ERR_UNKNOWN) return new Map();
    throw err;
  }
  return contexts;
}

async function openExport(io: HandshakeIo, options: NegotiateOptions, clientFlags: number): Promise<ExportInfo> {
  if (options.useExportName) {
    io.write(encodeOption(Option.EXPORT_NAME, Buffer.from(options.exportName, 'utf8')));
    const noZeroes = (clientFlags & ClientFlag.NO_ZEROES) !== 0;
    const reply = await io.read(10 + (noZeroes ? 0 : Size.EXPORT_NAME_PADDING));
    const size = readU64(reply, 0);
    if (!Number.isSafeInteger(size)) throw new NbdProtocolError(`export size ${size} is beyond 2^53`);
    return { size, flags: reply.readUInt16BE(8) };
  }
  const request = encodeInfoRequest({ name: options.exportName, infos: [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE] });
  const info: Partial<ExportInfo> = {};
  const collect = (_type: number, data: Buffer): void => applyInfoReply(info, data);
  if (options.infoBeforeGo) await exchangeOption(io, Option.INFO, request, collect);
  await exchangeOption(io, Option.GO, request, collect);
  if (info.size === undefined || info.flags === undefined) throw new NbdProtocolError('the server ended GO without INFO_EXPORT');
  return { ...info, size: info.size, flags: info.flags };
}

/** Everything from the greeting to the start of transmission. */
export async function negotiate(io: HandshakeIo, options: NegotiateOptions): Promise<Negotiated> {
  const clientFlags = await greet(io, options.noZeroes ?? true);
  if (options.tls) {
    // Before any other option, so that nothing else travels in clear; a refusal ends the connection.
    await exchangeOption(io, Option.STARTTLS, Buffer.alloc(0), () => undefined);
    await io.startTls();
  }
  const extended = options.extendedHeaders ? await optional(io, Option.EXTENDED_HEADERS) : false;
  const structured = !extended && (options.structuredReplies ?? true) ? await optional(io, Option.STRUCTURED_REPLY) : false;
  const mode: ReplyMode = extended ? 'extended' : structured ? 'structured' : 'simple';
  const contexts = options.metaContexts?.length && mode !== 'simple' ? await selectContexts(io, options.exportName, options.metaContexts) : new Map<number, string>();
  const info = await openExport(io, options, clientFlags);
  if (!(info.flags & TransmissionFlag.HAS_FLAGS)) throw new NbdProtocolError(`transmission flags 0x${info.flags.toString(16)} without HAS_FLAGS`);
  return { info, mode, contexts };
}

/** LIST: the server's exports. */
export async function listExports(io: HandshakeIo): Promise<Array<{ name: string; description: string }>> {
  await greet(io, true);
  const list: Array<{ name: string; description: string }> = [];
  await exchangeOption(io, Option.LIST, Buffer.alloc(0), (_type, data) => list.push(decodeServerReply(data)));
  return list;
}
