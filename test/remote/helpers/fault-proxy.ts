/**
 * A small HTTP/1.1 proxy of our own in front of an origin (nginx), for remote-base tests: it
 * forwards every request and can be told to break the next N range GETs in one way each:
 * - `reset`: drop the connection without answering;
 * - `stall`: answer nothing (the client's header timeout must fire);
 * - `stall-body`: send the headers and half the body, then nothing more (body timeout);
 * - `short`: send the headers and half the body, then close (a short body);
 * - `status-503`: 503 with Retry-After: 1;
 * - `status-429`: 429 with Retry-After: 0;
 * - `full-200`: forward without the Range header, so the origin answers 200 with the whole object;
 * - `wrong-range`: forward, but shift the Content-Range the client sees by 512 bytes;
 * - `status-403`: 403 (not worth retrying);
 * - `hold`: forward only once `release()` is called (the origin seems busy, for as long as a
 *   test needs; nothing times out meanwhile when the wait is shorter than the client's timeout).
 * Always on: `latencyMs` before forwarding a request and again before answering; optionally
 * HEAD refused (405) and the validators (ETag, Last-Modified) stripped. It counts requests
 * and body bytes sent to clients. It listens on 127.0.0.1 port 0 and is closed by the test.
 */
import http from 'node:http';
import type { Socket } from 'node:net';

export type Fault = 'reset' | 'stall' | 'stall-body' | 'short' | 'status-503' | 'status-429' | 'full-200' | 'wrong-range' | 'status-403' | 'hold';

export interface FaultProxyOptions {
  upstreamPort: number;
  latencyMs?: number;
}

export interface FaultProxy {
  port: number;
  url(path: string): string;
  /** The next `count` range GETs get `fault` (queued after faults already waiting). */
  inject(fault: Fault, count?: number): void;
  /** Faults still waiting to be used. */
  pending(): number;
  /** Range GETs being held (`hold`) right now. */
  held(): number;
  /** Lets every held GET through, and drops the `hold` faults still waiting. */
  release(): void;
  refuseHead: boolean;
  stripValidators: boolean;
  latencyMs: number;
  readonly counters: { requests: number; gets: number; bytes: number; faults: number };
  close(): Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function startFaultProxy(o: FaultProxyOptions): Promise<FaultProxy> {
  const queue: Fault[] = [];
  const sockets = new Set<Socket>();
  let holding = 0;
  let releaseHeld: () => void = () => undefined;
  let held = new Promise<void>((resolve) => (releaseHeld = resolve));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const state = {
    refuseHead: false,
    stripValidators: false,
    latencyMs: o.latencyMs ?? 0,
    counters: { requests: 0, gets: 0, bytes: 0, faults: 0 },
  };

  const forward = (req: http.IncomingMessage, res: http.ServerResponse, fault: Fault | null): void => {
    const headers = { ...req.headers };
    if (fault === 'full-200') delete headers.range;
    const up = http.request({ host: '127.0.0.1', port: o.upstreamPort, method: req.method, path: req.url, headers, agent }, (upRes) => {
      void (async () => {
        if (state.latencyMs > 0) await sleep(state.latencyMs);
        const out: http.OutgoingHttpHeaders = { ...upRes.headers };
        if (state.stripValidators) {
          delete out.etag;
          delete out['last-modified'];
        }
        if (fault === 'wrong-range' && typeof out['content-range'] === 'string') {
          out['content-range'] = out['content-range'].replace(/^bytes (\d+)-(\d+)/, (_, a: string, b: string) => `bytes ${Number(a) + 512}-${Number(b) + 512}`);
        }
        res.writeHead(upRes.statusCode ?? 502, out);
        const length = Number(upRes.headers['content-length'] ?? 0);
        let sent = 0;
        const cut = fault === 'short' || fault === 'stall-body' ? Math.floor(length / 2) : Infinity;
        upRes.on('data', (chunk: Buffer) => {
          if (sent >= cut) return;
          const piece = sent + chunk.length > cut ? chunk.subarray(0, cut - sent) : chunk;
          sent += piece.length;
          state.counters.bytes += piece.length;
          res.write(piece);
          if (sent >= cut) {
            upRes.destroy();
            if (fault === 'short') res.socket?.destroy();
            // stall-body: the socket stays open and silent until the client gives up.
          }
        });
        upRes.on('end', () => {
          if (sent < cut) res.end();
        });
      })();
    });
    up.on('error', () => res.socket?.destroy());
    req.pipe(up);
  };

  const server = http.createServer((req, res) => {
    state.counters.requests++;
    void (async () => {
      if (state.latencyMs > 0) await sleep(state.latencyMs);
      if (req.method === 'HEAD' && state.refuseHead) {
        res.writeHead(405, { 'content-length': 0 });
        res.end();
        return;
      }
      const isRangeGet = req.method === 'GET' && req.headers.range !== undefined;
      if (req.method === 'GET') state.counters.gets++;
      const fault = isRangeGet ? (queue.shift() ?? null) : null;
      if (fault) state.counters.faults++;
      switch (fault) {
        case 'reset':
          req.socket.destroy();
          return;
        case 'stall':
          return;
        case 'hold':
          holding++;
          await held;
          holding--;
          forward(req, res, null);
          return;
        case 'status-503':
        case 'status-429':
        case 'status-403': {
          const status = Number(fault.slice(7));
          res.writeHead(status, { 'content-length': 0, ...(status === 403 ? {} : { 'retry-after': status === 503 ? '1' : '0' }) });
          res.end();
          return;
        }
        default:
          forward(req, res, fault);
      }
    })();
  });
  server.keepAliveTimeout = 60_000;
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    port,
    url: (p) => `http://127.0.0.1:${port}/${p}`,
    inject: (fault, count = 1) => {
      for (let i = 0; i < count; i++) queue.push(fault);
    },
    pending: () => queue.length,
    held: () => holding,
    release: () => {
      for (let i = queue.length - 1; i >= 0; i--) if (queue[i] === 'hold') queue.splice(i, 1);
      releaseHeld();
      held = new Promise<void>((resolve) => (releaseHeld = resolve));
    },
    get refuseHead() {
      return state.refuseHead;
    },
    set refuseHead(v: boolean) {
      state.refuseHead = v;
    },
    get stripValidators() {
      return state.stripValidators;
    },
    set stripValidators(v: boolean) {
      state.stripValidators = v;
    },
    get latencyMs() {
      return state.latencyMs;
    },
    set latencyMs(v: number) {
      state.latencyMs = v;
    },
    counters: state.counters,
    close: async () => {
      for (const s of sockets) s.destroy();
      agent.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
