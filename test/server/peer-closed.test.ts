import net from 'node:net';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { loadNative } from '../../src/io/native.js';
import { makePeerClosedProbe } from '../../src/server/peer-closed.js';

describe('peer-closed probe', () => {
  const cleanup: Array<() => void> = [];
  afterEach(() => {
    for (const c of cleanup.splice(0)) c();
  });

  /** A connected pair on 127.0.0.1; the server side is accepted paused (nothing is read). */
  async function pair(): Promise<{ server: net.Socket; client: net.Socket }> {
    const listener = net.createServer({ pauseOnConnect: true });
    listener.listen(0, '127.0.0.1');
    await once(listener, 'listening');
    const port = (listener.address() as net.AddressInfo).port;
    const accepted = once(listener, 'connection') as Promise<[net.Socket]>;
    const client = net.connect(port, '127.0.0.1');
    await once(client, 'connect');
    const [server] = await accepted;
    cleanup.push(() => {
      client.destroy();
      server.destroy();
      listener.close();
    });
    return { server, client };
  }

  const until = async (what: () => boolean): Promise<void> => {
    for (let i = 0; i < 200 && !what(); i++) await new Promise((r) => setTimeout(r, 5));
  };

  it('sees the FIN behind unread data at once, and a live peer as alive', async () => {
    const native = loadNative();
    expect(native?.peerClosed, 'the native addon is built by `npm ci` (node-gyp); run `node native/build.mjs` (needs python3, make, g++)').toBeTypeOf('function');
    const probe = makePeerClosedProbe(native);
    const { server, client } = await pair();
    // Small enough to sit in the receive buffer whole: a FIN queues behind unsent data.
    client.write(Buffer.alloc(16 * 1024, 7));
    await new Promise((r) => setTimeout(r, 20));
    expect(probe(server)).toBe(false);
    client.end();
    await until(() => probe(server) === true);
    // Nothing has been read: the stream itself has not seen the end yet.
    expect(probe(server)).toBe(true);
    expect(server.readableEnded).toBe(false);
  });

  it('cannot tell without the addon', async () => {
    const { server } = await pair();
    expect(makePeerClosedProbe(null)(server)).toBeNull();
  });
});
