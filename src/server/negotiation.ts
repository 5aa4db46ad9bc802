/**
 * The handshake phase of one connection (fixed newstyle): greeting, client flags, then options
 * until EXPORT_NAME or a successful GO. Unknown options are answered ERR_UNSUP and the stream
 * goes on; only what cannot be answered (bad magic, unknown client flags, an oversized option,
 * EXPORT_NAME of an unknown export) closes the connection.
 */
import type { Logger } from 'pino';
import {
  ClientFlag,
  Info,
  KNOWN_CLIENT_FLAGS,
  Limits,
  Option,
  OptionReply,
  Size,
} from '../nbd/constants.js';
import type { ReplyMode } from '../nbd/codec.js';
import {
  OptionFormatError,
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoText,
  encodeMetaContextReply,
  encodeOptionReply,
  encodeServerReply,
  type BlockSizeConstraints,
} from '../nbd/handshake.js';
import type { Export } from './export.js';
import { CONTEXT_IDS, contextKind, matchContexts, type ContextKind } from './meta-contexts.js';
import type { TlsSettings } from './tls.js';

/** A violation that cannot be answered: the connection is closed. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

/** The client ended negotiation on purpose (ABORT). */
export class NegotiationAborted extends Error {
  override name = 'NegotiationAborted';
}

export interface NegotiationIO {
  /** Resolves with exactly `n` bytes; rejects when the connection closes first. */
  read(n: number): Promise<Buffer>;
  write(buf: Buffer): void;
  /** After STARTTLS's ACK: runs the TLS handshake; later reads and writes are encrypted. */
  startTls(settings: TlsSettings): Promise<void>;
}

export interface ExportDirectory {
  get(name: string): Export | undefined;
  list(): Export[];
}

export interface NegotiationPolicy {
  shuttingDown(): boolean;
  blockSize: BlockSizeConstraints;
  tls: TlsSettings | null;
}

export interface Negotiated {
  export: Export;
  mode: ReplyMode;
  /** Selected metadata contexts by id. */
  contexts: Map<number, { kind: ContextKind; name: string }>;
}

export const DEFAULT_BLOCK_SIZE: BlockSizeConstraints = {
  minimum: 1,
  preferred: 4096,
  maximum: Limits.MAX_PAYLOAD,
};

interface State {
  structured: boolean;
  extended: boolean;
  noZeroes: boolean;
  contexts: Map<number, { kind: ContextKind; name: string }>;
  contextsExport: string | null;
  secured: boolean;
}

export async function negotiate(
  io: NegotiationIO,
  exports: ExportDirectory,
  policy: NegotiationPolicy,
  log: Logger,
): Promise<Negotiated> {
  io.write(encodeGreeting());
  const clientFlags = (await io.read(4)).readUInt32BE(0);
  if ((clientFlags & ~KNOWN_CLIENT_FLAGS) !== 0) {
    throw new ProtocolError(`unknown client flags 0x${clientFlags.toString(16)}`);
  }
  const state: State = {
    structured: false,
    extended: false,
    noZeroes: (clientFlags & ClientFlag.NO_ZEROES) !== 0,
    contexts: new Map(),
    contextsExport: null,
    secured: false,
  };
  for (;;) {
    const header = decodeOptionHeader(await io.read(Size.OPTION_HEADER));
    if (!header) throw new ProtocolError('bad option magic');
    if (header.length > Limits.MAX_OPTION_LENGTH) {
      throw new ProtocolError(`option ${header.option} has ${header.length} bytes of data (limit ${Limits.MAX_OPTION_LENGTH})`);
    }
    const data = await io.read(header.length);
    log.debug({ option: header.option, length: header.length }, 'option');
    const reply = (type: number, payload?: Buffer): void => io.write(encodeOptionReply(header.option, type, payload));
    const error = (type: number, message: string): void => reply(type, Buffer.from(message, 'utf8'));

    if (header.option === Option.ABORT) {
      reply(OptionReply.ACK);
      throw new NegotiationAborted('client sent ABORT');
    }
    if (policy.tls?.mode === 'require' && !state.secured && header.option !== Option.STARTTLS) {
      // Nothing about the exports leaks before TLS, not even whether a name exists.
      if (header.option === Option.EXPORT_NAME) throw new ProtocolError('EXPORT_NAME before TLS on a server that requires TLS');
      error(OptionReply.ERR_TLS_REQD, 'this server requires TLS: send STARTTLS first');
      continue;
    }
    if (policy.shuttingDown()) {
      if (header.option === Option.EXPORT_NAME) throw new ProtocolError('server is shutting down');
      error(OptionReply.ERR_SHUTDOWN, 'server is shutting down');
      continue;
    }
    try {
      switch (header.option) {
        case Option.EXPORT_NAME: {
          if (state.extended) throw new ProtocolError('EXPORT_NAME after extended headers were negotiated');
          const name = data.toString('utf8');
          const exp = exports.get(name);
          if (!exp) throw new ProtocolError(`EXPORT_NAME: no export named "${name}"`);
          io.write(encodeExportNameReply(exp.size, exp.transmissionFlags(state.structured), state.noZeroes));
          return finish(exp, state);
        }
        case Option.LIST: {
          if (data.length > 0) {
            error(OptionReply.ERR_INVALID, 'LIST takes no data');
            break;
          }
          for (const exp of exports.list()) reply(OptionReply.SERVER, encodeServerReply(exp.name, exp.description));
          reply(OptionReply.ACK);
          break;
        }
        case Option.INFO:
        case Option.GO: {
          const request = decodeInfoRequest(data);
          const exp = exports.get(request.name);
          if (!exp) {
            error(OptionReply.ERR_UNKNOWN, `no export named "${request.name}"`);
            break;
          }
          reply(OptionReply.INFO, encodeInfoExport(exp.size, exp.transmissionFlags(state.structured || state.extended)));
          // Sent always: it tells the client the maximum payload, and that unaligned I/O is fine.
          reply(OptionReply.INFO, encodeInfoBlockSize(policy.blockSize));
          if (request.infos.includes(Info.NAME)) reply(OptionReply.INFO, encodeInfoText(Info.NAME, exp.name));
          if (request.infos.includes(Info.DESCRIPTION) && exp.description) {
            reply(OptionReply.INFO, encodeInfoText(Info.DESCRIPTION, exp.description));
          }
          reply(OptionReply.ACK);
          if (header.option === Option.GO) return finish(exp, state);
          break;
        }
        case Option.STRUCTURED_REPLY: {
          if (data.length > 0) error(OptionReply.ERR_INVALID, 'STRUCTURED_REPLY takes no data');
          else if (state.extended) error(OptionReply.ERR_EXT_HEADER_REQD, 'extended headers already negotiated');
          else if (state.structured) error(OptionReply.ERR_INVALID, 'structured replies already negotiated');
          else {
            state.structured = true;
            reply(OptionReply.ACK);
          }
          break;
        }
        case Option.EXTENDED_HEADERS: {
          if (data.length > 0) error(OptionReply.ERR_INVALID, 'EXTENDED_HEADERS takes no data');
          else if (state.extended) error(OptionReply.ERR_INVALID, 'extended headers already negotiated');
          else {
            state.extended = true;
            reply(OptionReply.ACK);
          }
          break;
        }
        case Option.LIST_META_CONTEXT:
        case Option.SET_META_CONTEXT: {
          const setting = header.option === Option.SET_META_CONTEXT;
          const request = decodeMetaContextRequest(data);
          if (setting) {
            state.contexts = new Map();
            state.contextsExport = null;
          }
          if (setting && !state.structured && !state.extended) {
            error(OptionReply.ERR_INVALID, 'SET_META_CONTEXT needs structured replies first');
            break;
          }
          const exp = exports.get(request.name);
          if (!exp) {
            error(OptionReply.ERR_UNKNOWN, `no export named "${request.name}"`);
            break;
          }
          for (const name of matchContexts(exp.metaContexts(), request.queries, !setting)) {
            const kind = contextKind(name);
            if (!kind) continue;
            const id = setting ? CONTEXT_IDS[kind] : 0;
            if (setting) state.contexts.set(id, { kind, name });
            reply(OptionReply.META_CONTEXT, encodeMetaContextReply(id, name));
          }
          if (setting) state.contextsExport = request.name;
          reply(OptionReply.ACK);
          break;
        }
        case Option.STARTTLS: {
          if (!policy.tls) error(OptionReply.ERR_UNSUP, 'TLS is not configured on this server');
          else if (state.secured) error(OptionReply.ERR_INVALID, 'TLS is already running');
          else if (data.length > 0) error(OptionReply.ERR_INVALID, 'STARTTLS takes no data');
          else {
            reply(OptionReply.ACK);
            await io.startTls(policy.tls);
            // Everything negotiated in the clear is forgotten.
            state.structured = false;
            state.extended = false;
            state.contexts = new Map();
            state.contextsExport = null;
            state.secured = true;
          }
          break;
        }
        default:
          error(OptionReply.ERR_UNSUP, `option ${header.option} is not supported`);
      }
    } catch (err) {
      if (err instanceof OptionFormatError) error(OptionReply.ERR_INVALID, err.message);
      else throw err;
    }
  }
}

function finish(exp: Export, state: State): Negotiated {
  // Contexts selected for another export do not carry over (the spec ties them to the name).
  const contexts = state.contextsExport === exp.name ? state.contexts : new Map<number, { kind: ContextKind; name: string }>();
  const mode: ReplyMode = state.extended ? 'extended' : state.structured ? 'structured' : 'simple';
  return { export: exp, mode, contexts };
}
