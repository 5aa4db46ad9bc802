/**
 * One client connection: negotiation, then a pipeline of requests in flight.
 *
 * - Requests are parsed as bytes arrive and started at once; replies leave as each request
 *   finishes, in any order, each written whole (all buffers of one reply in one synchronous
 *   burst of socket writes, so nothing can come between them).
 * - Replies are corked and flushed once per event-loop turn (setImmediate): many small replies
 *   leave in one writev instead of one syscall each.
 * - Back-pressure: above `maxBytesInFlight` (payloads and read lengths of unfinished requests,
 *   plus replies the socket has not sent yet) or `maxRequestsInFlight` requests, the socket is
 *   paused; it resumes below half of both.
 * - Fencing across a pause: while paused, the client may have died with requests still unread
 *   in the kernel. Those must not run after newer writes from another connection, so requests
 *   read right after a resume wait until we know the client is alive: the kernel is asked
 *   whether its FIN has arrived (poll POLLRDHUP through the native addon; otherwise we wait
 *   for the next turn of the event loop). If the connection has ended without DISC, they are
 *   dropped (none was acknowledged). A client whose FIN had not yet arrived when we resumed
 *   (its last bytes still in flight on the network) cannot be told from a slow live one.
 * - A protocol violation (bad magic, absurd payload) closes this connection only. A client
 *   that vanishes mid-reply is harmless: its requests finish, their replies are dropped.
 */
import type { Socket } from 'node:net';
import { upgradeToTls, type TlsSettings } from './tls.js';
import type { Logger } from 'pino';
import { ByteQueue } from '../nbd/byte-queue.js';
import { Command, Limits } from '../nbd/constants.js';
import { RequestReader, type ParsedRequest } from '../nbd/request-reader.js';
import { dispatch, type Connection, type ReplySink } from './dispatch.js';
import type { Export } from './export.js';
import { BufferPool } from '../io/buffer-pool.js';
import { makePeerClosedProbe, type PeerClosedProbe } from './peer-closed.js';
import {
  NegotiationAborted,
  ProtocolError,
  negotiate,
  type ExportDirectory,
  type NegotiationPolicy,
} from './negotiation.js';

export interface SessionOptions {
  maxBytesInFlight: number;
  maxRequestsInFlight: number;
  negotiationTimeoutMs: number;
  /** Buffers for large payloads and replies, shared by the sessions of a server. */
  pool: BufferPool;
  /** Asks the kernel whether the client has closed its side (see peer-closed.ts). */
  peerClosed: PeerClosedProbe;
}

/** How bytes reach the session: 'data' events of the socket, or `receive` calls with bytes that
 * are only valid during the call (a socket reading into one reused buffer). */
export type InputMode = 'events' | 'transient';

/** Payload bytes still missing for the next read to go straight into the payload: below this
 * the copy costs less than the extra read it takes to reach the next header. */
const DIRECT_READ_MIN = 64 * 1024;

/** How long a client still negotiating may stay once the server shuts down. */
const SHUTDOWN_GRACE_MS = 1000;

export function defaultSessionOptions(): SessionOptions {
  return {
    maxBytesInFlight: 64 * 1024 * 1024,
    maxRequestsInFlight: 1024,
    negotiationTimeoutMs: 30_000,
    pool: new BufferPool(),
    peerClosed: makePeerClosedProbe(),
  };
}

type Phase = 'negotiating' | 'transmitting' | 'draining' | 'closed';

export class Session implements ReplySink {
  private phase: Phase = 'negotiating';
  private readonly queue = new ByteQueue();
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private conn: Connection | null = null;
  /** Set when transmission starts; negotiation reads from `queue` instead. */
  private reader: RequestReader | null = null;
  private inFlight = 0;
  private bytesInFlight = 0;
  private paused = false;
  /** Just resumed from a pause: requests read now wait until we know the client is alive. */
  private holding = false;
  private peerEnded = false;
  /** The kernel says the client is gone: the hold ends when the stream's end is read. */
  private releaseAtEnd = false;
  /** The TCP or unix connection under any TLS layer: the kernel is asked about it. */
  private readonly transport: Socket;
  private readonly traceRequests: boolean;
  private corked = false;
  private idleWaiters: Array<() => void> = [];
  private finished!: () => void;
  /** Resolves when the socket is closed and every request it started has finished. */
  readonly done: Promise<void>;

  constructor(
    private socket: Socket,
    private readonly exports: ExportDirectory,
    private readonly policy: NegotiationPolicy,
    private readonly log: Logger,
    private readonly options: SessionOptions = defaultSessionOptions(),
    private readonly input: InputMode = 'events',
  ) {
    this.transport = socket;
    this.traceRequests = log.isLevelEnabled('trace');
    this.done = new Promise((resolve) => {
      this.finished = resolve;
    });
  }

  private readonly onDataListener = (chunk: Buffer): void => this.onData(chunk);
  private readonly onDrainListener = (): void => this.maybeResume();

  start(): void {
    const socket = this.socket;
    socket.setNoDelay(true);
    if (this.input === 'events') socket.on('data', this.onDataListener);
    socket.on('error', (err) => this.log.debug({ err: err.message }, 'socket error'));
    socket.on('end', () => {
      this.peerEnded = true;
      if (this.releaseAtEnd) {
        this.releaseAtEnd = false;
        this.releaseHold();
      }
    });
    socket.on('close', () => this.onClose());
    socket.on('drain', this.onDrainListener);
    // Servers accept paused, so that nothing is read before the session is ready.
    socket.resume();
    void this.runNegotiation();
  }

  /** Transient input: bytes valid only during this call; whatever is kept is copied. */
  receive(chunk: Buffer): void {
    if (!this.reader) {
      this.onData(Buffer.from(chunk));
      return;
    }
    if (this.phase !== 'transmitting') return;
    try {
      this.reader.pushTransient(chunk);
    } catch (err) {
      this.protocolError(err instanceof Error ? err.message : String(err));
      return;
    }
    this.pump();
  }

  /** Transient input: the rest of a large payload being received, for the next read to fill
   * in place; null when the next bytes should come through the shared buffer. */
  directTarget(): Buffer | null {
    if (this.phase !== 'transmitting' || !this.reader) return null;
    return this.reader.directTarget(DIRECT_READ_MIN);
  }

  /** Transient input: `n` bytes were read into `target`, a buffer `directTarget` gave. */
  receiveDirect(target: Buffer, n: number): void {
    if (this.phase !== 'transmitting' || !this.reader) return;
    // The reader checks the view is still its payload's rest; if not, the bytes go in as any.
    if (!this.reader.receivedDirect(target, n)) return this.receive(target.subarray(0, n));
    this.pump();
  }

  /** Moves the session onto a TLS socket wrapped around the plain one. */
  private async startTls(settings: TlsSettings): Promise<void> {
    if (this.queue.length > 0) throw new ProtocolError('client sent data before the TLS handshake');
    const plain = this.socket;
    plain.off('data', this.onDataListener);
    plain.off('drain', this.onDrainListener);
    const secure = await upgradeToTls(plain, settings);
    secure.on('error', (err) => this.log.debug({ err: err.message }, 'TLS error'));
    secure.on('data', this.onDataListener);
    secure.on('drain', this.onDrainListener);
    this.socket = secure;
    this.log.debug({ protocol: secure.getProtocol(), cipher: secure.getCipher().name }, 'TLS established');
  }

  private async runNegotiation(): Promise<void> {
    const timer = setTimeout(() => {
      this.log.info('negotiation timed out');
      this.socket.destroy();
    }, this.options.negotiationTimeoutMs);
    try {
      const io = {
        read: (n: number) => this.read(n),
        write: (b: Buffer) => this.writeRaw(b),
        startTls: (settings: TlsSettings) => this.startTls(settings),
      };
      const negotiated = await negotiate(io, this.exports, this.policy, this.log);
      clearTimeout(timer);
      if (this.phase !== 'negotiating') return;
      if (this.exports.get(negotiated.export.name) !== negotiated.export) {
        // Removed while this client negotiated.
        this.socket.destroy();
        return;
      }
      this.conn = { export: negotiated.export, mode: negotiated.mode, contexts: negotiated.contexts };
      negotiated.export.attach();
      this.phase = 'transmitting';
      this.reader = new RequestReader(negotiated.mode === 'extended', (size) => this.options.pool.take(size));
      // Whatever the client pipelined behind GO is the start of the request stream.
      if (this.queue.length > 0) this.reader.push(this.queue.take(this.queue.length));
      this.log.debug(
        { export: negotiated.export.name, mode: negotiated.mode, contexts: [...negotiated.contexts.values()].map((c) => c.name) },
        'transmission',
      );
      this.pump();
    } catch (err) {
      clearTimeout(timer);
      if (err instanceof NegotiationAborted) this.log.debug('client aborted negotiation');
      else if (err instanceof ProtocolError) this.log.info({ reason: err.message }, 'closing: protocol error in negotiation');
      else if (this.phase !== 'closed') this.log.warn({ err }, 'negotiation failed');
      this.socket.end();
      this.socket.destroySoon();
    }
  }

  /** Negotiation reads: resolves with exactly `n` bytes. */
  private read(n: number): Promise<Buffer> {
    if (this.phase === 'closed') return Promise.reject(new Error('connection closed'));
    if (this.queue.length >= n) return Promise.resolve(this.queue.take(n));
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
    });
  }

  private onData(chunk: Buffer): void {
    if (this.reader) {
      if (this.phase !== 'transmitting') return;
      this.reader.push(chunk);
      this.pump();
      return;
    }
    this.queue.push(chunk);
    if (this.phase === 'negotiating') {
      const w = this.waiter;
      if (w && this.queue.length >= w.n) {
        this.waiter = null;
        w.resolve(this.queue.take(w.n));
      }
    }
  }

  /** Parses and starts every complete request received so far. */
  private pump(): void {
    const conn = this.conn;
    const reader = this.reader;
    if (!conn || !reader) return;
    while (this.phase === 'transmitting' && !this.paused && !this.holding) {
      let request: ParsedRequest | null;
      try {
        request = reader.next();
      } catch (err) {
        return this.protocolError(err instanceof Error ? err.message : String(err));
      }
      if (!request) return;
      if (request.type === Command.DISC) {
        this.log.debug('client sent DISC');
        this.stopReading();
        return;
      }
      this.startRequest(request, conn);
      if (this.overloaded(1)) {
        this.paused = true;
        this.socket.pause();
        this.log.debug({ requests: this.inFlight, bytesInFlight: this.bytesInFlight, unsentReplyBytes: this.socket.writableLength }, 'paused reading: at the in-flight limit');
      }
    }
  }

  /** More in flight than the limits allow (times `fraction`). */
  private overloaded(fraction: number): boolean {
    return (
      this.bytesInFlight + this.socket.writableLength > this.options.maxBytesInFlight * fraction ||
      this.inFlight >= this.options.maxRequestsInFlight * fraction
    );
  }

  private startRequest(request: ParsedRequest, conn: Connection): void {
    const weight = request.payload.length + (request.type === Command.READ ? Math.min(request.length, Limits.MAX_PAYLOAD) : 0);
    this.inFlight++;
    this.bytesInFlight += weight;
    // Built only when someone reads it: an object per request is garbage the collector pays for.
    if (this.traceRequests) this.log.trace({ type: request.type, offset: request.offset, length: request.length, flags: request.flags }, 'request');
    void this.runRequest(request, conn, weight);
  }

  /** One request from start to reply (a single async frame: the collector's cost per request). */
  private async runRequest(request: ParsedRequest, conn: Connection, weight: number): Promise<void> {
    try {
      await dispatch(request, conn, this);
    } catch (err) {
      // dispatch answers every failure itself; reaching here is a bug, not a client error.
      this.log.error({ err }, 'request handler failed');
      this.socket.destroy();
    } finally {
      if (request.payloadCopied) this.options.pool.give(request.payload);
      this.inFlight--;
      this.bytesInFlight -= weight;
      if (this.inFlight === 0) for (const wake of this.idleWaiters.splice(0)) wake();
      this.maybeResume();
      this.maybeFinishDraining();
    }
  }

  private maybeResume(): void {
    if (!this.paused || this.phase !== 'transmitting') return;
    if (this.overloaded(0.5)) return;
    this.paused = false;
    this.holding = true;
    this.socket.resume();
    this.log.debug('resumed reading');
    // What the kernel held while we were paused is read in the next I/O phases, and the end of
    // the stream behind it if the client is gone. The kernel knows at once whether the client's
    // FIN has arrived; where it cannot be asked, the hold lasts until the check phase of the
    // next turn of the loop (a check phase can come before the I/O phase in the current one).
    setImmediate(() => setImmediate(() => this.releaseHold()));
  }

  private releaseHold(): void {
    // A reset connection is gone too, and tells it differently: replies sent to a client that
    // has closed make its kernel answer RST, the read fails with ECONNRESET after delivering
    // the bytes before it, and the socket is destroyed (no 'end'; no descriptor left to ask)
    // while 'close' comes only in a later phase of the loop, after this check phase. Such a
    // client's unread requests must not run either.
    const gone = this.peerEnded || this.transport.destroyed || this.socket.destroyed;
    if (!gone && this.phase === 'transmitting' && this.options.peerClosed(this.transport) === true) {
      // Gone, with bytes still unread before its end: keep holding until the end is read.
      this.releaseAtEnd = true;
      return;
    }
    this.holding = false;
    const reader = this.reader;
    if (this.phase !== 'transmitting' || !reader) return;
    if (gone) {
      // The client died while we were not reading. A DISC among what it sent means it meant to
      // finish; otherwise nothing of it was acknowledged, so none of it may run late.
      const pending: ParsedRequest[] = [];
      try {
        for (let r = reader.next(); r; r = reader.next()) pending.push(r);
      } catch {
        // A cut-off request at the end of a dead stream: nothing after it can run anyway.
      }
      const disc = pending.findIndex((r) => r.type === Command.DISC);
      if (disc < 0 && pending.length > 0) this.log.info({ dropped: pending.length }, 'client closed while paused: its unread requests are dropped');
      const conn = this.conn;
      if (conn) for (const request of pending.slice(0, Math.max(disc, 0))) this.startRequest(request, conn);
      this.stopReading();
      return;
    }
    this.pump();
  }

  /** No more requests from this client: finish those in flight, then close. */
  private stopReading(): void {
    this.phase = 'draining';
    this.reader?.clear();
    this.maybeFinishDraining();
  }

  private maybeFinishDraining(): void {
    if (this.inFlight > 0) return;
    if (this.phase === 'draining') {
      this.flushCork();
      this.socket.end();
      // A socket paused at the in-flight limit would never read the client's end of the
      // stream, so it would never close (and a paused socket does not keep the process alive:
      // a shutdown then exited 13 without syncing). Read on; what arrives is dropped.
      if (this.paused) {
        this.paused = false;
        this.socket.resume();
      }
    }
  }

  private protocolError(reason: string): void {
    this.log.info({ reason }, 'closing: protocol error');
    this.phase = 'draining';
    this.reader?.clear();
    this.socket.destroy();
  }

  /** ReplySink: the buffers of one reply, written back to back. */
  send(buffers: readonly Buffer[], release?: () => void): void {
    if (this.socket.destroyed || !this.socket.writable) {
      release?.();
      return;
    }
    // The only request in flight: nothing else can join this reply's writev, so it leaves now
    // rather than at the end of the turn (a queue-depth-1 client waits for every reply).
    const alone = !this.corked && this.inFlight <= 1;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      if (!alone) setImmediate(() => this.flushCork());
    }
    const last = buffers.length - 1;
    // The callback of the last write runs once the socket has taken all of them (or failed).
    buffers.forEach((b, i) => this.socket.write(b, i === last ? release : undefined));
    if (alone) this.flushCork();
  }

  allocate(size: number): Buffer {
    return this.options.pool.take(size);
  }

  recycle(buf: Buffer): void {
    this.options.pool.give(buf);
  }

  private flushCork(): void {
    if (!this.corked) return;
    this.corked = false;
    this.socket.uncork();
  }

  private writeRaw(buf: Buffer): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(buf);
  }

  private onClose(): void {
    const wasTransmitting = this.conn !== null;
    this.phase = 'closed';
    this.queue.clear();
    this.reader?.clear();
    this.waiter?.reject(new Error('connection closed'));
    this.waiter = null;
    this.log.debug('connection closed');
    const finish = async (): Promise<void> => {
      // Requests still running finish first, so the export's last-connection sync covers them.
      if (this.inFlight > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
      if (wasTransmitting && this.conn) await this.conn.export.detach();
      this.finished();
    };
    void finish();
  }

  /** The export this connection is transmitting on, once negotiation finished. */
  get export(): Export | null {
    return this.conn?.export ?? null;
  }

  /** Bytes of requests this connection has in flight (payloads and read lengths). */
  get pendingBytes(): number {
    return this.bytesInFlight;
  }

  /** Requests this connection has started and not yet answered. */
  get pendingRequests(): number {
    return this.inFlight;
  }

  /** Not reading from the client: at the in-flight limit, or holding until it is known alive. */
  get readingStopped(): boolean {
    return this.paused || this.holding;
  }

  /** Server shutdown: stop taking requests, finish those in flight, then close; a client still
   * negotiating gets ERR_SHUTDOWN for its options and is dropped after a short grace. */
  shutdown(): void {
    if (this.phase === 'negotiating') {
      // Options it sends now get ERR_SHUTDOWN (the protocol's way to tell a client to go);
      // a client that does not leave is dropped shortly after.
      setTimeout(() => this.socket.destroy(), SHUTDOWN_GRACE_MS).unref();
      return;
    }
    if (this.phase === 'transmitting') {
      this.phase = 'draining';
      this.reader?.clear();
      this.maybeFinishDraining();
    }
  }
}
