/**
 * An NBD client: fixed-newstyle negotiation (GO, optionally INFO first, structured replies or
 * extended headers, metadata contexts) and a transmission phase with any number of requests in
 * flight, answered in any order. The tests drive the server with it; remote bases (nbd://) use
 * it as a layer's transport.
 */
import net from 'node:net';
import { ByteQueue } from './byte-queue.js';
import {
  ClientFlag,
  Command,
  CommandFlag,
  HandshakeFlag,
  Info,
  Magic,
  Option,
  OptionReply,
  ReplyFlag,
  ReplyType,
  Size,
} from './constants.js';
import { encodeRequestHeader, readU64, type ReplyMode } from './codec.js';
import {
  applyInfoReply,
  decodeMetaContextReply,
  decodeOptionReplyHeader,
  decodeServerReply,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  isErrorReply,
  type ExportInfo,
} from './handshake.js';
import type { NbdTarget } from './uri.js';

/** A request the server answered with an error. */
export class NbdRequestError extends Error {
  override name = 'NbdRequestError';
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
}

/** The server refused an option during negotiation. */
export class NbdOptionError extends Error {
  override name = 'NbdOptionError';
  constructor(
    readonly option: number,
    readonly replyType: number,
    message: string,
  ) {
    super(message);
  }
}

export interface ClientOptions {
  exportName?: string;
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

export interface BlockStatusExtent {
  length: number;
  flags: number;
}

interface Pending {
  type: number;
  offset: number;
  length: number;
  data: Buffer | null;
  extents: Map<number, BlockStatusExtent[]>;
  error: NbdRequestError | null;
  resolve: (value: Pending) => void;
  reject: (err: Error) => void;
}

export interface ZeroFlags {
  fua?: boolean;
  noHole?: boolean;
  fast?: boolean;
}

export class NbdClient {
  private readonly queue = new ByteQueue();
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private readonly pending = new Map<bigint, Pending>();
  private nextCookie = 1n;
  private transmitting = false;
  private closedError: Error | null = null;
  private readonly closedPromise: Promise<void>;
  info: ExportInfo = { size: 0, flags: 0 };
  mode: ReplyMode = 'simple';
  /** Selected metadata contexts: id → name. */
  readonly contexts = new Map<number, string>();
  exports: Array<{ name: string; description: string }> = [];

  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.closedPromise = new Promise((resolve) => {
      socket.on('close', () => {
        this.fail(this.closedError ?? new Error('connection closed'));
        resolve();
      });
    });
    socket.on('error', (err) => {
      this.closedError ??= err;
    });
  }

  static async connect(target: NbdTarget | { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string }, options: ClientOptions = {}): Promise<NbdClient> {
    const socket = target.kind === 'tcp' ? net.connect({ host: target.host, port: target.port }) : net.connect(target.path);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const client = new NbdClient(socket);
    const exportName = options.exportName ?? ('exportName' in target ? target.exportName : '');
    try {
      await client.negotiate({ ...options, exportName });
    } catch (err) {
      socket.destroy();
      throw err;
    }
    return client;
  }

  /** Connects and lists the server's exports (LIST), then aborts. */
  static async list(target: { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string }): Promise<Array<{ name: string; description: string }>> {
    const socket = target.kind === 'tcp' ? net.connect({ host: target.host, port: target.port }) : net.connect(target.path);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const client = new NbdClient(socket);
    try {
      await client.greet(true);
      const list: Array<{ name: string; description: string }> = [];
      await client.option(Option.LIST, Buffer.alloc(0), (type, data) => {
        if (type === OptionReply.SERVER) list.push(decodeServerReply(data));
      });
      await client.option(Option.ABORT, Buffer.alloc(0), () => undefined).catch(() => undefined);
      return list;
    } finally {
      socket.destroy();
    }
  }

  get size(): number {
    return this.info.size;
  }

  get flags(): number {
    return this.info.flags;
  }

  private read(n: number): Promise<Buffer> {
    if (this.queue.length >= n) return Promise.resolve(this.queue.take(n));
    if (this.closedError || this.socket.destroyed) return Promise.reject(this.closedError ?? new Error('connection closed'));
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
    });
  }

  private onData(chunk: Buffer): void {
    this.queue.push(chunk);
    if (this.transmitting) {
      this.parseReplies();
      return;
    }
    const w = this.waiter;
    if (w && this.queue.length >= w.n) {
      this.waiter = null;
      w.resolve(this.queue.take(w.n));
    }
  }

  private async greet(noZeroes: boolean): Promise<number> {
    const greeting = await this.read(Size.GREETING);
    if (greeting.readBigUInt64BE(0) !== Magic.NBDMAGIC || greeting.readBigUInt64BE(8) !== Magic.IHAVEOPT) {
      throw new Error('not a newstyle NBD server');
    }
    const serverFlags = greeting.readUInt16BE(16);
    let clientFlags = ClientFlag.FIXED_NEWSTYLE;
    if (noZeroes && serverFlags & HandshakeFlag.NO_ZEROES) clientFlags |= ClientFlag.NO_ZEROES;
    const buf = Buffer.allocUnsafe(4);
    buf.writeUInt32BE(clientFlags, 0);
    this.socket.write(buf);
    return clientFlags;
  }

  /** Sends an option and reads replies until ACK (resolves) or an error reply (rejects). */
  private async option(option: number, data: Buffer, onReply: (type: number, data: Buffer) => void): Promise<void> {
    this.socket.write(encodeOption(option, data));
    for (;;) {
      const header = decodeOptionReplyHeader(await this.read(Size.OPTION_REPLY_HEADER));
      if (!header) throw new Error('bad option reply magic');
      const payload = await this.read(header.length);
      if (header.option !== option) throw new Error(`reply to option ${header.option}, expected ${option}`);
      if (isErrorReply(header.type)) {
        throw new NbdOptionError(option, header.type, `option ${option} refused (0x${header.type.toString(16)}): ${payload.toString('utf8')}`);
      }
      if (header.type === OptionReply.ACK) return;
      onReply(header.type, payload);
    }
  }

  private async negotiate(options: ClientOptions & { exportName: string }): Promise<void> {
    const clientFlags = await this.greet(options.noZeroes ?? true);
    let extended = false;
    let structured = false;
    if (options.extendedHeaders) {
      extended = await this.option(Option.EXTENDED_HEADERS, Buffer.alloc(0), () => undefined).then(
        () => true,
        (err: unknown) => {
          if (err instanceof NbdOptionError) return false;
          throw err;
        },
      );
    }
    if (!extended && (options.structuredReplies ?? true)) {
      structured = await this.option(Option.STRUCTURED_REPLY, Buffer.alloc(0), () => undefined).then(
        () => true,
        (err: unknown) => {
          if (err instanceof NbdOptionError) return false;
          throw err;
        },
      );
    }
    this.mode = extended ? 'extended' : structured ? 'structured' : 'simple';
    if (options.metaContexts?.length && this.mode !== 'simple') {
      const request = encodeMetaContextRequest({ name: options.exportName, queries: options.metaContexts });
      await this.option(Option.SET_META_CONTEXT, request, (type, data) => {
        if (type === OptionReply.META_CONTEXT) {
          const { id, name } = decodeMetaContextReply(data);
          this.contexts.set(id, name);
        }
      });
    }
    if (options.useExportName) {
      this.socket.write(encodeOption(Option.EXPORT_NAME, Buffer.from(options.exportName, 'utf8')));
      const noZeroes = (clientFlags & ClientFlag.NO_ZEROES) !== 0;
      const reply = await this.read(10 + (noZeroes ? 0 : Size.EXPORT_NAME_PADDING));
      this.info = { size: readU64(reply, 0), flags: reply.readUInt16BE(8) };
    } else {
      const infoRequest = encodeInfoRequest({ name: options.exportName, infos: [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE] });
      const info: Partial<ExportInfo> = {};
      const collect = (type: number, data: Buffer): void => {
        if (type === OptionReply.INFO) applyInfoReply(info, data);
      };
      if (options.infoBeforeGo) await this.option(Option.INFO, infoRequest, collect);
      await this.option(Option.GO, infoRequest, collect);
      if (info.size === undefined || info.flags === undefined) throw new Error('server sent no INFO_EXPORT');
      this.info = { ...info, size: info.size, flags: info.flags };
    }
    this.transmitting = true;
    this.parseReplies();
  }

  private fail(err: Error): void {
    this.waiter?.reject(err);
    this.waiter = null;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  private protocolError(message: string): void {
    this.closedError = new Error(`protocol error from server: ${message}`);
    this.socket.destroy();
  }

  private parseReplies(): void {
    while (this.queue.length >= 4) {
      const magic = this.queue.peek(4).readUInt32BE(0);
      if (magic === Magic.SIMPLE_REPLY) {
        if (this.queue.length < Size.SIMPLE_REPLY) return;
        const head = this.queue.peek(Size.SIMPLE_REPLY);
        const error = head.readUInt32BE(4);
        const cookie = head.readBigUInt64BE(8);
        const p = this.pending.get(cookie);
        if (!p) return this.protocolError(`reply for unknown cookie ${cookie}`);
        // Only a successful READ carries data, and only the request tells how much.
        const dataLength = p.type === Command.READ && error === 0 ? p.length : 0;
        if (this.queue.length < Size.SIMPLE_REPLY + dataLength) return;
        this.queue.skip(Size.SIMPLE_REPLY);
        if (dataLength > 0) this.queue.take(dataLength).copy(p.data!);
        if (error !== 0) p.error = new NbdRequestError(error, `server replied with error ${error}`);
        this.settle(cookie, p);
        continue;
      }
      const extended = magic === Magic.EXTENDED_REPLY;
      if (!extended && magic !== Magic.STRUCTURED_REPLY) return this.protocolError(`bad reply magic 0x${magic.toString(16)}`);
      const headerSize = extended ? Size.EXTENDED_REPLY : Size.STRUCTURED_REPLY;
      if (this.queue.length < headerSize) return;
      const head = this.queue.peek(headerSize);
      const flags = head.readUInt16BE(4);
      const type = head.readUInt16BE(6);
      const cookie = head.readBigUInt64BE(8);
      const length = extended ? readU64(head, 24) : head.readUInt32BE(16);
      if (this.queue.length < headerSize + length) return;
      this.queue.skip(headerSize);
      const payload = this.queue.take(length);
      const p = this.pending.get(cookie);
      if (!p) return this.protocolError(`chunk for unknown cookie ${cookie}`);
      this.applyChunk(p, type, payload, extended);
      if (flags & ReplyFlag.DONE) this.settle(cookie, p);
    }
  }

  private applyChunk(p: Pending, type: number, payload: Buffer, extended: boolean): void {
    switch (type) {
      case ReplyType.NONE:
        return;
      case ReplyType.OFFSET_DATA: {
        const offset = readU64(payload, 0);
        payload.copy(p.data!, offset - p.offset, 8);
        return;
      }
      case ReplyType.OFFSET_HOLE: {
        const offset = readU64(payload, 0);
        const size = payload.readUInt32BE(8);
        p.data!.fill(0, offset - p.offset, offset - p.offset + size);
        return;
      }
      case ReplyType.BLOCK_STATUS:
      case ReplyType.BLOCK_STATUS_EXT: {
        const id = payload.readUInt32BE(0);
        const extents: BlockStatusExtent[] = [];
        if (extended || type === ReplyType.BLOCK_STATUS_EXT) {
          const count = payload.readUInt32BE(4);
          for (let i = 0; i < count; i++) extents.push({ length: readU64(payload, 8 + i * 16), flags: readU64(payload, 16 + i * 16) });
        } else {
          for (let pos = 4; pos + 8 <= payload.length; pos += 8) extents.push({ length: payload.readUInt32BE(pos), flags: payload.readUInt32BE(pos + 4) });
        }
        p.extents.set(id, extents);
        return;
      }
      default:
        if (type & 0x8000) {
          const errno = payload.readUInt32BE(0);
          const msgLength = payload.readUInt16BE(4);
          p.error = new NbdRequestError(errno, payload.toString('utf8', 6, 6 + msgLength) || `server replied with error ${errno}`);
          return;
        }
        this.protocolError(`unknown chunk type ${type}`);
    }
  }

  private settle(cookie: bigint, p: Pending): void {
    this.pending.delete(cookie);
    if (p.error) p.reject(p.error);
    else p.resolve(p);
  }

  /** Sends one request; resolves when its whole reply has arrived. */
  private request(type: number, offset: number, length: number, flags = 0, payload?: Buffer): Promise<Pending> {
    if (!this.transmitting || this.socket.destroyed) return Promise.reject(this.closedError ?? new Error('connection closed'));
    const cookie = this.nextCookie++;
    const extended = this.mode === 'extended';
    let f = flags;
    if (extended && payload) f |= CommandFlag.PAYLOAD_LEN;
    const header = encodeRequestHeader({ flags: f, type, cookie, offset, length }, extended);
    return new Promise((resolve, reject) => {
      this.pending.set(cookie, {
        type,
        offset,
        length,
        data: type === Command.READ ? Buffer.alloc(length) : null,
        extents: new Map(),
        error: null,
        resolve,
        reject,
      });
      if (payload) {
        this.socket.cork();
        this.socket.write(header);
        this.socket.write(payload);
        this.socket.uncork();
      } else {
        this.socket.write(header);
      }
    });
  }

  async pread(offset: number, length: number, options: { df?: boolean; fua?: boolean } = {}): Promise<Buffer> {
    let flags = 0;
    if (options.df) flags |= CommandFlag.DF;
    if (options.fua) flags |= CommandFlag.FUA;
    return (await this.request(Command.READ, offset, length, flags)).data!;
  }

  async pwrite(data: Buffer, offset: number, options: { fua?: boolean } = {}): Promise<void> {
    await this.request(Command.WRITE, offset, data.length, options.fua ? CommandFlag.FUA : 0, data);
  }

  async flush(): Promise<void> {
    await this.request(Command.FLUSH, 0, 0);
  }

  async trim(offset: number, length: number, options: { fua?: boolean } = {}): Promise<void> {
    await this.request(Command.TRIM, offset, length, options.fua ? CommandFlag.FUA : 0);
  }

  async zero(offset: number, length: number, options: ZeroFlags = {}): Promise<void> {
    let flags = 0;
    if (options.fua) flags |= CommandFlag.FUA;
    if (options.noHole) flags |= CommandFlag.NO_HOLE;
    if (options.fast) flags |= CommandFlag.FAST_ZERO;
    await this.request(Command.WRITE_ZEROES, offset, length, flags);
  }

  async cache(offset: number, length: number): Promise<void> {
    await this.request(Command.CACHE, offset, length);
  }

  /** Block status for every selected context, by context name. */
  async blockStatus(offset: number, length: number, options: { reqOne?: boolean } = {}): Promise<Map<string, BlockStatusExtent[]>> {
    const p = await this.request(Command.BLOCK_STATUS, offset, length, options.reqOne ? CommandFlag.REQ_ONE : 0);
    const out = new Map<string, BlockStatusExtent[]>();
    for (const [id, extents] of p.extents) out.set(this.contexts.get(id) ?? `#${id}`, extents);
    return out;
  }

  /** Sends a raw request (any type and flags): for tests of the server's validation. */
  async rawRequest(type: number, offset: number, length: number, flags: number, payload?: Buffer): Promise<void> {
    await this.request(type, offset, length, flags, payload);
  }

  get inFlight(): number {
    return this.pending.size;
  }

  /** Soft disconnect: DISC, then close once the server hangs up. */
  async disconnect(): Promise<void> {
    if (this.transmitting && !this.socket.destroyed) {
      this.socket.write(encodeRequestHeader({ flags: 0, type: Command.DISC, cookie: 0n, offset: 0, length: 0 }, this.mode === 'extended'));
      this.socket.end();
    }
    await this.closedPromise;
  }

  /** Hard close without DISC. */
  destroy(): void {
    this.socket.destroy();
  }

  get closed(): Promise<void> {
    return this.closedPromise;
  }
}
