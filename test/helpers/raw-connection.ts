/** A plain socket with exact reads, for tests that speak the wire protocol by hand. */
import net from 'node:net';
import { ByteQueue } from '../../src/nbd/byte-queue.js';

export class RawConnection {
  private readonly queue = new ByteQueue();
  private waiter: (() => void) | null = null;
  private ended = false;
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.queue.push(d);
      this.waiter?.();
    });
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.ended = true;
        this.waiter?.();
        resolve();
      }),
    );
  }

  static async open(port: number, host = '127.0.0.1'): Promise<RawConnection> {
    const socket = net.connect({ host, port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawConnection(socket);
  }

  /** Resolves with exactly `n` bytes, or rejects when the server closes first or time runs out. */
  async read(n: number, timeoutMs = 5000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.queue.length < n) {
      if (this.ended) throw new Error(`connection closed after ${this.queue.length} of ${n} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} bytes (have ${this.queue.length})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = null;
    }
    return this.queue.take(n);
  }

  write(...buffers: Buffer[]): void {
    for (const b of buffers) this.socket.write(b);
  }

  /** True when the server closed the connection within the time limit. */
  async closedWithin(ms: number): Promise<boolean> {
    return Promise.race([this.closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
  }

  get pending(): number {
    return this.queue.length;
  }

  destroy(): void {
    this.socket.destroy();
  }
}
