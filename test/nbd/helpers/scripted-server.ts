/**
 * A fake NBD server on a unix socket that plays a script to each connection: send these bytes,
 * wait for that many bytes from the client, send more, and hang up at the end. The client
 * tests feed it valid conversations and mutated ones.
 *
 * A wait for client bytes also ends when the client closes or stays silent for `idleMs` (a
 * mutated stream can leave the client waiting for bytes that never come while the script waits
 * for a request the client will never send); the script then goes on, so every conversation
 * ends: at the latest, the server hangs up after its last step.
 */
import net from 'node:net';

export type Step =
  | {
      kind: 'send';
      bytes: Buffer;
      /** Byte ranges of `bytes` that are payload (data, extents, names, sizes) rather than framing. */
      dataRanges?: Array<[number, number]>;
      /** A message whose absence, repetition or reordering still makes a valid conversation (an entry of a LIST, an INFO reply). */
      optional?: boolean;
    }
  | { kind: 'expect'; bytes: number }
  /** Lets the event loop turn, so the next send arrives as a separate read. */
  | { kind: 'pause' }
  /** Stays silent until the client hangs up. */
  | { kind: 'hold' };

export class ScriptedServer {
  private readonly scripts: Step[][] = [];
  private readonly sockets = new Set<net.Socket>();
  /** Connections whose script has finished (or whose client left). */
  played = 0;

  private constructor(
    private readonly server: net.Server,
    readonly path: string,
    private readonly idleMs: number,
  ) {
    server.on('connection', (socket) => this.accept(socket));
  }

  static async start(path: string, idleMs = 20): Promise<ScriptedServer> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, resolve);
    });
    return new ScriptedServer(server, path, idleMs);
  }

  /** The script the next connection gets. */
  push(script: Step[]): void {
    this.scripts.push(script);
  }

  private accept(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
    const script = this.scripts.shift() ?? [];
    void this.play(socket, script).finally(() => {
      this.played++;
      socket.end();
    });
  }

  private async play(socket: net.Socket, script: readonly Step[]): Promise<void> {
    let received = 0;
    let closed = false;
    let wake: (() => void) | null = null;
    socket.on('data', (d: Buffer) => {
      received += d.length;
      wake?.();
    });
    socket.on('close', () => {
      closed = true;
      wake?.();
    });
    let wanted = 0;
    for (const step of script) {
      if (closed) return;
      if (step.kind === 'send') {
        socket.write(step.bytes);
      } else if (step.kind === 'pause') {
        await new Promise((r) => setImmediate(r));
      } else if (step.kind === 'hold') {
        await new Promise<void>((resolve) => (wake = resolve));
        while (!closed) await new Promise<void>((resolve) => (wake = resolve));
      } else {
        wanted += step.bytes;
        while (received < wanted && !closed) {
          const before = received;
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, this.idleMs);
            wake = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          wake = null;
          if (received === before && !closed) break;
        }
      }
    }
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
