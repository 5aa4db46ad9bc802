/**
 * An NBD client: fixed-newstyle negotiation (client-negotiation.ts: STARTTLS, GO with INFO
 * first if asked, structured replies or extended headers, metadata contexts) and a transmission
 * phase with any number of requests in flight, answered in any order (reply-reader.ts). The
 * tests drive the server with it; nbd:// bases (src/remote/nbd.ts) use it as their transport.
 *
 * It trusts nothing the server sends. A fault in one reply fails that request; a stream that can
 * no longer be framed closes the connection and fails every request in flight with
 * NbdConnectionError. No exception escapes a socket event handler, every length is capped before
 * it is allocated or waited for, and during negotiation the socket is paused while unread bytes
 * pile up, so memory stays bounded whatever the server sends.
 */
import net from 'node:net';
import { ByteQueue } from './byte-queue.js';
import { NbdClientError, NbdConnectionError, NbdProtocolError } from './client-errors.js';
import { listExports, negotiate, type HandshakeIo, type NegotiationChoices } from './client-negotiation.js';
import { wrapInTls, type ClientTlsOptions } from './client-tls.js';
import { encodeRequestHeader, type ReplyMode } from './codec.js';
import { ClientLimits, Command, CommandFlag, Option } from './constants.js';
import { encodeOption, type ExportInfo } from './handshake.js';
import { ReplyReader, type BlockStatusExtent, type InFlight } from './reply-reader.js';
import type { NbdTarget } from './uri.js';

export { NbdClientError, NbdConnectionError, NbdOptionError, NbdProtocolError, NbdRequestError } from './client-errors.js';
export type { BlockStatusExtent } from './reply-reader.js';
export type { ClientTlsOptions } from './client-tls.js';

export interface ClientOptions extends NegotiationChoices {
  /** The export to open (default: the target's, or ""). */
  exportName?: string;
  /** Upgrade to TLS (STARTTLS first thing); a server that refuses it is an error. */
  tls?: ClientTlsOptions;
  /** Give up with NbdConnectionError when connecting and negotiating take longer than this. */
  timeoutMs?: number;
  /** Aborting it gives up connecting and negotiating (NbdConnectionError). */
  signal?: AbortSignal;
}

export interface ZeroFlags {
  fua?: boolean;
  noHole?: boolean;
  fast?: boolean;
}

export interface ReadOptions {
  df?: boolean;
  fua?: boolean;
  /** Read into this buffer (its length is the read's length) instead of a new one. */
  into?: Buffer;
}

type Endpoint = NbdTarget | { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

function toClientError(err: unknown): NbdClientError {
  if (err instanceof NbdClientError) return err;
  const cause = err instanceof Error ? err : new Error(String(err));
  return new NbdConnectionError(cause.message, cause);
}

export class NbdClient {
  private socket: net.Socket;
  private readonly queue = new ByteQueue();
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private readonly pending = new Map<bigint, InFlight>();
  private reader: ReplyReader | null = null;
  private nextCookie = 1n;
  /** Why the connection closed (or is closing), once it did. */
  private closedError: NbdConnectionError | null = null;
  private isClosed = false;
  private resolveClosed: () => void = () => undefined;
  private readonly closedPromise: Promise<void>;
  info: ExportInfo = { size: 0, flags: 0 };
  mode: ReplyMode = 'simple';
  /** Selected metadata contexts: id → name. */
  readonly contexts = new Map<number, string>();
  exports: Array<{ name: string; description: string }> = [];

  private constructor(
    socket: net.Socket,
    private readonly servername: string,
  ) {
    this.socket = socket;
    this.closedPromise = new Promise((resolve) => (this.resolveClosed = resolve));
    socket.setNoDelay(true);
    this.attach(socket);
  }

  static async connect(target: Endpoint, options: ClientOptions = {}): Promise<NbdClient> {
    if (options.signal?.aborted) throw new NbdConnectionError('connection attempt cancelled');
    const started = Date.now();
    const client = await NbdClient.open(target, options.timeoutMs, options.signal);
    // One limit for connecting and negotiating together.
    const left = options.timeoutMs === undefined ? undefined : Math.max(1, options.timeoutMs - (Date.now() - started));
    const exportName = options.exportName ?? ('exportName' in target ? target.exportName : '');
    const cancel = (): void => client.abort(new NbdConnectionError('connection attempt cancelled'));
    options.signal?.addEventListener('abort', cancel, { once: true });
    try {
      const negotiated = await client.withTimeout(negotiate(client.io(options.tls), { ...options, exportName, tls: options.tls !== undefined }), left, options.timeoutMs);
      client.info = negotiated.info;
      client.mode = negotiated.mode;
      for (const [id, name] of negotiated.contexts) client.contexts.set(id, name);
      client.startTransmission();
    } catch (err) {
      client.destroy();
      throw toClientError(err);
    } finally {
      options.signal?.removeEventListener('abort', cancel);
    }
    if (client.closedError) throw client.closedError;
    return client;
  }

  /** Connects and lists the server's exports (LIST), then aborts. */
  static async list(target: Endpoint, options: { timeoutMs?: number } = {}): Promise<Array<{ name: string; description: string }>> {
    const client = await NbdClient.open(target, options.timeoutMs);
    try {
      const io = client.io(undefined);
      const list = await client.withTimeout(listExports(io), options.timeoutMs);
      io.write(encodeOption(Option.ABORT));
      return list;
    } catch (err) {
      throw toClientError(err);
    } finally {
      client.destroy();
    }
  }

  private static async open(target: Endpoint, timeoutMs: number | undefined, signal?: AbortSignal): Promise<NbdClient> {
    const socket = target.kind === 'tcp' ? net.connect({ host: target.host, port: target.port }) : net.connect(target.path);
    const client = new NbdClient(socket, target.kind === 'tcp' ? target.host : 'localhost');
    const cancel = (): void => client.abort(new NbdConnectionError('connection attempt cancelled'));
    signal?.addEventListener('abort', cancel, { once: true });
    try {
      await client.withTimeout(new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        void client.closedPromise.then(() => reject(client.closedError ?? new NbdConnectionError('connection closed before it was established')));
      }), timeoutMs);
    } catch (err) {
      client.destroy();
      throw toClientError(err);
    } finally {
      signal?.removeEventListener('abort', cancel);
    }
    return client;
  }

  /** Rejects (and closes the connection) when `work` takes longer than `ms`; the error names the whole `limitMs`. */
  private withTimeout<T>(work: Promise<T>, ms: number | undefined, limitMs = ms): Promise<T> {
    if (ms === undefined) return work;
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new NbdConnectionError(`no answer within ${limitMs} ms`, new Error('timeout'));
        this.abort(err);
        reject(err);
      }, ms);
    });
    return Promise.race([work, expired]).finally(() => clearTimeout(timer));
  }

  private attach(socket: net.Socket): void {
    socket.on('data', this.onData);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
  }

  private readonly onData = (chunk: Buffer): void => {
    try {
      this.receive(chunk);
    } catch (err) {
      this.abort(err instanceof NbdProtocolError ? new NbdConnectionError(`protocol error from server: ${err.message}`, err) : toClientError(err));
    }
  };

  private readonly onError = (err: Error): void => {
    this.closedError ??= new NbdConnectionError(err.message, err);
  };

  private readonly onClose = (): void => {
    this.isClosed = true;
    const err = (this.closedError ??= new NbdConnectionError('connection closed by the server'));
    this.waiter?.reject(err);
    this.waiter = null;
    const requests = [...this.pending.values()];
    this.pending.clear();
    for (const r of requests) r.settle(err);
    this.resolveClosed();
  };

  private receive(chunk: Buffer): void {
    this.queue.push(chunk);
    if (this.reader) {
      this.reader.drain();
      return;
    }
    // Negotiation reads one capped piece at a time: stop reading while too much is unread.
    if (this.queue.length >= ClientLimits.NEGOTIATION_HIGH_WATER) this.socket.pause();
    const w = this.waiter;
    if (w && this.queue.length >= w.n) {
      this.waiter = null;
      w.resolve(this.queue.take(w.n));
    }
  }

  /** Closes the connection because of `err`; requests in flight fail with it. */
  private abort(err: NbdClientError): void {
    this.closedError ??= err instanceof NbdConnectionError ? err : new NbdConnectionError(err.message, err);
    this.socket.destroy();
  }

  private read(n: number): Promise<Buffer> {
    if (this.queue.length >= n) {
      const bytes = this.queue.take(n);
      if (this.queue.length < ClientLimits.NEGOTIATION_HIGH_WATER) this.socket.resume();
      return Promise.resolve(bytes);
    }
    if (this.isClosed || this.closedError) return Promise.reject(this.closedError ?? new NbdConnectionError('connection closed'));
    this.socket.resume();
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
    });
  }

  private io(tls: ClientTlsOptions | undefined): HandshakeIo {
    return {
      read: (n) => this.read(n),
      write: (data) => void this.socket.write(data),
      startTls: () => this.startTls(tls ?? {}),
    };
  }

  private async startTls(options: ClientTlsOptions): Promise<void> {
    if (this.queue.length > 0) throw new NbdProtocolError(`${this.queue.length} bytes after STARTTLS's ACK, before the TLS handshake`);
    const plain = this.socket;
    plain.off('data', this.onData);
    plain.off('error', this.onError);
    plain.off('close', this.onClose);
    // The TLS socket reports the plain socket's failures; this only keeps them from being unhandled.
    plain.on('error', () => undefined);
    const secure = wrapInTls(plain, options, options.servername ?? this.servername);
    this.socket = secure;
    this.attach(secure);
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      void this.closedPromise.then(() => reject(this.closedError ?? new NbdConnectionError('connection closed during the TLS handshake')));
    });
  }

  private startTransmission(): void {
    this.reader = new ReplyReader(this.queue, this.mode, this.contexts, this.pending);
    this.socket.resume();
    // Bytes that came right after the last negotiation reply: replies to nothing yet, a fault.
    if (this.queue.length > 0) this.onData(Buffer.alloc(0));
  }

  get size(): number {
    return this.info.size;
  }

  get flags(): number {
    return this.info.flags;
  }

  /** Sends one request; resolves when its whole reply has arrived and checked out. */
  private request(type: number, offset: number, length: number, flags = 0, payload?: Buffer, into?: Buffer): Promise<InFlight> {
    if (!this.reader || this.isClosed || this.closedError) return Promise.reject(this.closedError ?? new NbdConnectionError('connection closed'));
    const cookie = this.nextCookie++;
    const extended = this.mode === 'extended';
    let f = flags;
    if (extended && payload) f |= CommandFlag.PAYLOAD_LEN;
    const header = encodeRequestHeader({ flags: f, type, cookie, offset, length }, extended);
    return new Promise((resolve, reject) => {
      const request: InFlight = {
        type,
        flags: f,
        offset,
        length,
        data: type === Command.READ ? (into ?? Buffer.alloc(length)) : null,
        extents: new Map(),
        error: null,
        chunks: 0,
        contentChunks: 0,
        coverage: null,
        settle: (err) => (err ? reject(err) : resolve(request)),
      };
      this.pending.set(cookie, request);
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

  async pread(offset: number, length: number, options: ReadOptions = {}): Promise<Buffer> {
    if (options.into && options.into.length !== length) throw new RangeError(`pread of ${length} bytes into a buffer of ${options.into.length}`);
    let flags = 0;
    if (options.df) flags |= CommandFlag.DF;
    if (options.fua) flags |= CommandFlag.FUA;
    return (await this.request(Command.READ, offset, length, flags, undefined, options.into)).data!;
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

  /** True once the connection is closed or closing: no request can be sent any more. */
  get isOpen(): boolean {
    return !this.isClosed && this.closedError === null;
  }

  /** Soft disconnect: DISC, then close once the server hangs up. */
  async disconnect(): Promise<void> {
    if (this.reader && this.isOpen) {
      this.socket.write(encodeRequestHeader({ flags: 0, type: Command.DISC, cookie: 0n, offset: 0, length: 0 }, this.mode === 'extended'));
      this.socket.end();
    } else {
      this.socket.destroy();
    }
    await this.closedPromise;
  }

  /** Hard close without DISC. */
  destroy(): void {
    this.closedError ??= new NbdConnectionError('connection closed by the client');
    this.socket.destroy();
  }

  get closed(): Promise<void> {
    return this.closedPromise;
  }
}
