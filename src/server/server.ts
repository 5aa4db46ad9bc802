/**
 * The NBD server: listeners (TCP and unix sockets, any number at once), the exports, and the
 * sessions. Shutdown stops accepting, lets every session finish what is in flight, then syncs
 * and closes every export.
 */
import fs from 'node:fs/promises';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Export } from './export.js';
import { DEFAULT_BLOCK_SIZE, type ExportDirectory, type NegotiationPolicy } from './negotiation.js';
import { adoptWithReadBuffer } from './read-buffer.js';
import { Session, defaultSessionOptions, type SessionOptions } from './session.js';
import type { TlsSettings } from './tls.js';

export interface ServerOptions {
  logger: Logger;
  session?: Partial<SessionOptions>;
  tls?: TlsSettings | null;
  /** Connections beyond this many are closed at once (0 = no limit). */
  maxConnections?: number;
  /** Only TCP clients whose address is in this list are served (unix sockets always are). */
  allow?: net.BlockList | null;
  /** File mode of unix sockets, e.g. 0o660. */
  socketMode?: number;
}

/** Bytes one socket read can take in. */
const READ_BUFFER_SIZE = 1024 * 1024;

export type ListenAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

export class NbdServer implements ExportDirectory {
  private readonly exportsByName = new Map<string, Export>();
  private readonly listeners: net.Server[] = [];
  private readonly sessions = new Set<Session>();
  private readonly unixPaths: string[] = [];
  private nextConnectionId = 1;
  private closing: Promise<void> | null = null;
  private readonly policy: NegotiationPolicy;
  private readonly sessionOptions: SessionOptions;
  /** Every plaintext connection reads into this one buffer (see read-buffer.ts). */
  private readonly readBuffer = Buffer.allocUnsafe(READ_BUFFER_SIZE);

  constructor(
    exports: Iterable<Export>,
    private readonly options: ServerOptions,
  ) {
    for (const exp of exports) this.addExport(exp);
    this.policy = { shuttingDown: () => this.closing !== null, blockSize: DEFAULT_BLOCK_SIZE, tls: options.tls ?? null };
    this.sessionOptions = { ...defaultSessionOptions(), ...options.session };
  }

  get(name: string): Export | undefined {
    return this.exportsByName.get(name);
  }

  list(): Export[] {
    return [...this.exportsByName.values()];
  }

  addExport(exp: Export): void {
    if (this.exportsByName.has(exp.name)) throw new Error(`export "${exp.name}" is defined twice`);
    this.exportsByName.set(exp.name, exp);
  }

  get connectionCount(): number {
    return this.sessions.size;
  }

  /** Bytes of requests in flight over all connections. */
  get bytesInFlight(): number {
    return this.sumOverSessions((s) => s.pendingBytes);
  }

  /** Requests started and not yet answered over all connections. */
  get requestsInFlight(): number {
    return this.sumOverSessions((s) => s.pendingRequests);
  }

  /** Connections not reading their client's requests (at the in-flight limit, or fencing). */
  get connectionsNotReading(): number {
    return this.sumOverSessions((s) => (s.readingStopped ? 1 : 0));
  }

  private sumOverSessions(value: (s: Session) => number): number {
    let total = 0;
    for (const s of this.sessions) total += value(s);
    return total;
  }

  /**
   * Stops serving an export: new clients no longer find it, its connections finish what is in
   * flight and close, then it is synced and closed.
   */
  async removeExport(name: string): Promise<void> {
    const exp = this.exportsByName.get(name);
    if (!exp) throw new Error(`no export named "${name}"`);
    this.exportsByName.delete(name);
    const draining = [...this.sessions].filter((s) => s.export === exp);
    for (const session of draining) session.shutdown();
    await Promise.all(draining.map((s) => s.done));
    await exp.close();
    this.options.logger.info({ export: name }, 'export removed');
  }

  /** Listens on TCP; port 0 picks a free port. Resolves with the bound address. */
  listenTcp(host: string, port: number): Promise<AddressInfo> {
    return this.listen((server) => server.listen({ host, port })).then((server) => server.address() as AddressInfo);
  }

  /** Listens on a unix socket, replacing a stale socket file left by an earlier run. */
  async listenUnix(path: string): Promise<void> {
    await removeStaleSocket(path);
    await this.listen((server) => server.listen(path));
    this.unixPaths.push(path);
    if (this.options.socketMode !== undefined) await fs.chmod(path, this.options.socketMode);
  }

  /** Listens on an inherited listening socket (systemd socket activation). */
  async listenFd(fd: number): Promise<AddressInfo | string> {
    const server = await this.listen((s) => s.listen({ fd }));
    const address = server.address();
    if (address === null) throw new Error(`file descriptor ${fd} is not a listening socket`);
    return address;
  }

  private listen(start: (server: net.Server) => void): Promise<net.Server> {
    return new Promise((resolve, reject) => {
      const server = net.createServer({ pauseOnConnect: true }, (socket) => this.accept(socket));
      server.once('error', reject);
      server.once('listening', () => {
        server.off('error', reject);
        server.on('error', (err) => this.options.logger.error({ err }, 'listener error'));
        this.listeners.push(server);
        resolve(server);
      });
      start(server);
    });
  }

  private accept(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const id = this.nextConnectionId++;
    const peer = socket.remoteAddress;
    const log = this.options.logger.child({ conn: id, peer: peer ?? 'unix' });
    const allow = this.options.allow;
    if (allow && peer && !allow.check(peer.replace(/^::ffff:/, ''), net.isIPv6(peer.replace(/^::ffff:/, '')) ? 'ipv6' : 'ipv4')) {
      log.info('refused: address not allowed');
      socket.destroy();
      return;
    }
    const max = this.options.maxConnections ?? 0;
    if (max > 0 && this.sessions.size >= max) {
      log.info({ max }, 'refused: too many connections');
      socket.destroy();
      return;
    }
    log.debug('connection');
    // TLS wraps the socket itself, so TLS-capable servers keep node's own reads.
    let session: Session | null = null;
    const adopted = this.policy.tls
      ? null
      : adoptWithReadBuffer(socket, this.readBuffer, {
          chunk: (bytes) => session?.receive(bytes),
          target: () => session?.directTarget() ?? null,
          direct: (target, n) => session?.receiveDirect(target, n),
        });
    const created = new Session(adopted ?? socket, this, this.policy, log, this.sessionOptions, adopted ? 'transient' : 'events');
    session = created;
    this.sessions.add(created);
    void created.done.then(() => this.sessions.delete(created));
    created.start();
  }

  /** Stops accepting, drains every session, syncs and closes every export. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    const log = this.options.logger;
    // A listener's close callback waits for its connections, so drain the sessions meanwhile.
    const listenersClosed = Promise.all(this.listeners.map((l) => new Promise<void>((resolve) => l.close(() => resolve()))));
    for (const session of this.sessions) session.shutdown();
    await Promise.all([...this.sessions].map((s) => s.done));
    await listenersClosed;
    for (const exp of this.exportsByName.values()) {
      try {
        await exp.close();
      } catch (err) {
        log.error({ export: exp.name, err }, 'closing export failed');
      }
    }
    await Promise.all(this.unixPaths.map((p) => fs.rm(p, { force: true })));
    log.info('server stopped');
  }
}

/** A socket file with nobody listening is left over from a crash: remove it. A live one is an error. */
export async function removeStaleSocket(path: string): Promise<void> {
  const st = await fs.lstat(path).catch(() => null);
  if (!st) return;
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket`);
  const alive = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw new Error(`${path}: another server is listening on this socket`);
  await fs.rm(path, { force: true });
}
