/**
 * The connections to one upstream NBD export, kept alive for a read-only base.
 *
 * - Slots: one connection, or `connections` of them when the upstream advertises
 *   CAN_MULTI_CONN; each request goes to the ready slot with the fewest requests in flight.
 * - A slot whose connection drops reconnects after a delay (exponential, jitter, capped); the
 *   requests it had in flight go back to the queue and are replayed on whichever slot is ready
 *   next (every request here is a read or a block status: replaying is harmless).
 * - Each request has a budget: if it has not completed `retryBudgetMs` after it was submitted
 *   it fails with EIO (and a connection it was still waiting on is treated as stalled and
 *   reconnected).
 * - Identity: the first connection's size, minimum block size and base:allocation support are
 *   what the base was opened with. A reconnect that finds them changed, or finds the export
 *   gone, refuses the upstream for good: every request fails with EIO naming the reason, which
 *   is reported once through `onWarning`.
 * - Answers are typed: the upstream's error numbers become RequestError with the same name
 *   (EIO for unknown ones); a malformed reply is EIO; no error escapes as anything else.
 */
import { NbdErrno, RequestError, type NbdErrnoName } from '../block/errors.js';
import { NbdClient, NbdConnectionError, NbdOptionError, NbdProtocolError, NbdRequestError } from '../nbd/client.js';
import { ClientLimits, MetaContext, OptionReply, TransmissionFlag } from '../nbd/constants.js';
import { backoffDelay } from './backoff.js';
import type { NbdSource } from './nbd-source.js';

export interface NbdPoolOptions {
  /** Connections to use when the upstream advertises CAN_MULTI_CONN (default 4); one otherwise. */
  connections?: number;
  /** How long a request may take, reconnects and replays included, before it fails with EIO (default 60 s). */
  retryBudgetMs?: number;
  /** First reconnect delay (default 100 ms); it doubles per failed attempt up to `backoffCapMs` (default 5 s). */
  backoffBaseMs?: number;
  backoffCapMs?: number;
  /** Limit for connecting and negotiating, per attempt (default 10 s). */
  connectTimeoutMs?: number;
  /** Most requests in flight on one connection (default 64); more wait in the pool's queue. */
  maxInFlightPerConnection?: number;
  /** Told about lost connections, a refused upstream, connections that could not be opened. */
  onWarning?: (message: string) => void;
  /** Jitter source (tests make it deterministic). */
  random?: () => number;
}

/** What the first connection learned; every later connection must agree. */
export interface UpstreamFacts {
  readonly size: number;
  readonly flags: number;
  readonly minBlockSize: number;
  /** Largest read sent, a multiple of the minimum block size. */
  readonly maxPayload: number;
  readonly hasAllocation: boolean;
  readonly multiConn: boolean;
}

export interface PoolStats {
  /** Connections ready now. */
  connections: number;
  /** Connections made since the pool opened (the first included). */
  connects: number;
  /** Requests sent again after their connection dropped. */
  replays: number;
  /** Most requests in flight at once, over all connections. */
  peakInFlight: number;
}

interface Op {
  readonly run: (client: NbdClient) => Promise<void>;
  readonly resolve: () => void;
  readonly reject: (err: RequestError) => void;
  timer: NodeJS.Timeout | null;
  slot: Slot | null;
  done: boolean;
}

interface Slot {
  client: NbdClient | null;
  state: 'connecting' | 'ready' | 'waiting' | 'closed';
  /** It had a connection once (a slot that never had one is only warned about once). */
  connectedOnce: boolean;
  failures: number;
  timer: NodeJS.Timeout | null;
  readonly ops: Set<Op>;
}

const ESHUTDOWN = NbdErrno.ESHUTDOWN;
const ERRNO_NAMES = new Map<number, NbdErrnoName>(Object.entries(NbdErrno).map(([name, n]) => [n, name as NbdErrnoName]));

function factsOf(client: NbdClient): UpstreamFacts {
  const bs = client.info.blockSize;
  const minBlockSize = bs?.minimum ?? 1;
  const advertised = bs && bs.maximum !== 0xffffffff ? bs.maximum : ClientLimits.DEFAULT_MAX_PAYLOAD;
  const capped = Math.min(advertised, ClientLimits.DEFAULT_MAX_PAYLOAD);
  return {
    size: client.size,
    flags: client.flags,
    minBlockSize,
    maxPayload: Math.max(minBlockSize, capped - (capped % minBlockSize)),
    hasAllocation: [...client.contexts.values()].includes(MetaContext.BASE_ALLOCATION),
    multiConn: (client.flags & TransmissionFlag.CAN_MULTI_CONN) !== 0,
  };
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class NbdConnectionPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Op[] = [];
  private refusal: string | null = null;
  private closing = false;
  /** When the first connection of an outage was lost; null while none is. */
  private outageSince: number | null = null;
  private warnedExtra = false;
  private inFlight = 0;
  private firstAttempts: Promise<void> = Promise.resolve();
  /** Cancels connection attempts still under way when the pool closes or refuses its upstream. */
  private readonly stop = new AbortController();
  readonly stats: PoolStats = { connections: 0, connects: 0, replays: 0, peakInFlight: 0 };
  private readonly settings: Required<Omit<NbdPoolOptions, 'onWarning'>> & Pick<NbdPoolOptions, 'onWarning'>;

  private constructor(
    private readonly source: NbdSource,
    readonly facts: UpstreamFacts,
    options: NbdPoolOptions,
  ) {
    this.settings = {
      connections: Math.max(1, Math.floor(options.connections ?? 4)),
      retryBudgetMs: options.retryBudgetMs ?? 60_000,
      backoffBaseMs: options.backoffBaseMs ?? 100,
      backoffCapMs: options.backoffCapMs ?? 5_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      maxInFlightPerConnection: options.maxInFlightPerConnection ?? 64,
      random: options.random ?? Math.random,
      onWarning: options.onWarning,
    };
  }

  /** Opens the first connection (its failure is the caller's error), then the others in parallel. */
  static async open(source: NbdSource, options: NbdPoolOptions = {}): Promise<NbdConnectionPool> {
    const first = await NbdClient.connect(source.target, NbdConnectionPool.clientOptions(source, options.connectTimeoutMs ?? 10_000));
    const pool = new NbdConnectionPool(source, factsOf(first), options);
    const count = pool.facts.multiConn ? pool.settings.connections : 1;
    for (let i = 0; i < count; i++) pool.slots.push({ client: null, state: 'connecting', connectedOnce: false, failures: 0, timer: null, ops: new Set() });
    pool.adopt(pool.slots[0], first);
    // The others connect in the background: a server that advertises multi-conn but takes
    // fewer clients must not hold up the open. A failure there is only a warning (the slot
    // keeps trying).
    pool.firstAttempts = Promise.all(pool.slots.slice(1).map((slot) => pool.connect(slot))).then(() => undefined);
    return pool;
  }

  /** Resolves once every connection has made its first attempt (tests wait for it to count them). */
  get connectionsSettled(): Promise<void> {
    return this.firstAttempts;
  }

  private static clientOptions(source: NbdSource, timeoutMs: number, signal?: AbortSignal): Parameters<typeof NbdClient.connect>[1] {
    return { exportName: source.target.exportName, structuredReplies: true, metaContexts: [MetaContext.BASE_ALLOCATION], tls: source.tls, timeoutMs, signal };
  }

  private warn(message: string): void {
    this.settings.onWarning?.(message);
  }

  /** Runs `run` on a connection, replaying it after a drop, within the retry budget. */
  submit(run: (client: NbdClient) => Promise<void>): Promise<void> {
    if (this.refusal) return Promise.reject(new RequestError('EIO', this.refusal));
    if (this.closing) return Promise.reject(new RequestError('EIO', `${this.source.display}: the base is closed`));
    return new Promise((resolve, reject) => {
      const op: Op = { run, resolve, reject, timer: null, slot: null, done: false };
      op.timer = setTimeout(() => this.expire(op), this.settings.retryBudgetMs);
      this.queue.push(op);
      this.pump();
    });
  }

  private pump(): void {
    while (this.queue.length > 0) {
      let best: Slot | null = null;
      for (const slot of this.slots) {
        // A connection that is closing but not yet reported lost takes nothing.
        if (slot.state !== 'ready' || !slot.client?.isOpen || slot.ops.size >= this.settings.maxInFlightPerConnection) continue;
        if (!best || slot.ops.size < best.ops.size) best = slot;
      }
      if (!best) return;
      const op = this.queue.shift()!;
      if (!op.done) this.dispatch(op, best);
    }
  }

  private dispatch(op: Op, slot: Slot): void {
    const client = slot.client!;
    op.slot = slot;
    slot.ops.add(op);
    this.inFlight++;
    this.stats.peakInFlight = Math.max(this.stats.peakInFlight, this.inFlight);
    const settled = (): void => {
      slot.ops.delete(op);
      op.slot = null;
      this.inFlight--;
    };
    op.run(client).then(
      () => {
        settled();
        this.finish(op, null);
        this.pump();
      },
      (err: unknown) => {
        settled();
        this.failed(op, err, client);
        this.pump();
      },
    );
  }

  private failed(op: Op, err: unknown, client: NbdClient): void {
    if (op.done) return;
    const shutdown = err instanceof NbdRequestError && err.errno === ESHUTDOWN;
    if (err instanceof NbdConnectionError || shutdown) {
      if (this.refusal) return this.finish(op, new RequestError('EIO', this.refusal));
      if (this.closing) return this.finish(op, new RequestError('EIO', `${this.source.display}: the base is closed`));
      // The upstream is going away: drop the connection now rather than send it more.
      if (shutdown) client.destroy();
      this.stats.replays++;
      this.queue.unshift(op);
      return;
    }
    if (err instanceof NbdRequestError) {
      const name = ERRNO_NAMES.get(err.errno) ?? 'EIO';
      return this.finish(op, new RequestError(name, `${this.source.display}: the upstream answered error ${err.errno}: ${err.message}`));
    }
    const what = err instanceof NbdProtocolError ? 'a malformed reply' : 'a failure';
    this.finish(op, new RequestError('EIO', `${this.source.display}: ${what} from the upstream: ${messageOf(err)}`));
  }

  private expire(op: Op): void {
    if (op.done) return;
    // Still waiting on a connection after the whole budget: the upstream is stalled.
    op.slot?.client?.destroy();
    this.finish(op, new RequestError('EIO', `${this.source.display}: no answer from the upstream within ${this.settings.retryBudgetMs} ms`));
  }

  private finish(op: Op, err: RequestError | null): void {
    if (op.done) return;
    op.done = true;
    if (op.timer) clearTimeout(op.timer);
    if (err) op.reject(err);
    else op.resolve();
  }

  private adopt(slot: Slot, client: NbdClient): void {
    slot.client = client;
    slot.state = 'ready';
    slot.connectedOnce = true;
    slot.failures = 0;
    this.stats.connects++;
    this.stats.connections++;
    if (this.outageSince !== null) {
      this.warn(`${this.source.display}: reconnected to the upstream after ${Date.now() - this.outageSince} ms`);
      this.outageSince = null;
    }
    void client.closed.then(() => this.lost(slot, client));
    this.pump();
  }

  private lost(slot: Slot, client: NbdClient): void {
    if (slot.client !== client) return;
    slot.client = null;
    this.stats.connections--;
    if (this.closing || this.refusal) {
      slot.state = 'closed';
      return;
    }
    if (this.outageSince === null) {
      this.outageSince = Date.now();
      this.warn(`${this.source.display}: lost a connection to the upstream; reconnecting`);
    }
    this.retryLater(slot);
  }

  private retryLater(slot: Slot): void {
    slot.state = 'waiting';
    const delay = backoffDelay(slot.failures, { baseMs: this.settings.backoffBaseMs, capMs: this.settings.backoffCapMs }, this.settings.random);
    slot.failures++;
    slot.timer = setTimeout(() => {
      slot.timer = null;
      void this.connect(slot);
    }, delay);
  }

  /** One attempt to (re)connect a slot; never rejects. */
  private async connect(slot: Slot): Promise<void> {
    if (this.closing || this.refusal) return;
    slot.state = 'connecting';
    let client: NbdClient;
    try {
      client = await NbdClient.connect(this.source.target, NbdConnectionPool.clientOptions(this.source, this.settings.connectTimeoutMs, this.stop.signal));
    } catch (err) {
      if (this.closing || this.refusal) return;
      if (err instanceof NbdOptionError && err.replyType === OptionReply.ERR_UNKNOWN) {
        return this.refuse(`the upstream no longer has the export ${JSON.stringify(this.source.target.exportName)} (${err.message})`);
      }
      if (!slot.connectedOnce && !this.warnedExtra) {
        this.warnedExtra = true;
        this.warn(`${this.source.display}: could not open connection ${this.slots.indexOf(slot) + 1} of ${this.slots.length} (${messageOf(err)}); will retry`);
      }
      return this.retryLater(slot);
    }
    if (this.closing || this.refusal) {
      client.destroy();
      return;
    }
    const problem = this.changed(factsOf(client));
    if (problem) {
      client.destroy();
      return this.refuse(problem);
    }
    this.adopt(slot, client);
  }

  /** How the upstream differs from the one the base was opened on, or null. */
  private changed(now: UpstreamFacts): string | null {
    const was = this.facts;
    if (now.size !== was.size) return `the upstream's size changed from ${was.size} to ${now.size} bytes`;
    if (now.minBlockSize !== was.minBlockSize) return `the upstream's minimum block size changed from ${was.minBlockSize} to ${now.minBlockSize}`;
    if (now.hasAllocation !== was.hasAllocation) return `the upstream ${now.hasAllocation ? 'now offers' : 'no longer offers'} base:allocation`;
    return null;
  }

  private refuse(reason: string): void {
    if (this.refusal) return;
    this.refusal = `${this.source.display}: ${reason}; the base refuses to read from it`;
    this.warn(this.refusal);
    this.stop.abort();
    const err = new RequestError('EIO', this.refusal);
    for (const slot of this.slots) {
      if (slot.timer) clearTimeout(slot.timer);
      slot.timer = null;
      slot.state = 'closed';
      slot.client?.destroy();
      for (const op of slot.ops) this.finish(op, err);
    }
    for (const op of this.queue.splice(0)) this.finish(op, err);
  }

  /** Why the base refuses its upstream, or null while it does not. */
  get refused(): string | null {
    return this.refusal;
  }

  async close(): Promise<void> {
    this.closing = true;
    this.stop.abort();
    const err = new RequestError('EIO', `${this.source.display}: the base is closed`);
    for (const op of this.queue.splice(0)) this.finish(op, err);
    const clients: NbdClient[] = [];
    for (const slot of this.slots) {
      if (slot.timer) clearTimeout(slot.timer);
      slot.timer = null;
      slot.state = 'closed';
      if (slot.client) clients.push(slot.client);
    }
    await Promise.all(
      clients.map(async (c) => {
        // A soft disconnect, unless the upstream does not hang up soon.
        const timer = setTimeout(() => c.destroy(), 2_000);
        await c.disconnect();
        clearTimeout(timer);
      }),
    );
  }
}
