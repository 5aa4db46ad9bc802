import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRaw } from '../../src/formats/raw.js';
import { NbdClient } from '../../src/nbd/client.js';
import { Export } from '../../src/server/export.js';
import { NbdServer, type ServerOptions } from '../../src/server/server.js';
import { Stack } from '../../src/stack/stack.js';
import { RawConnection } from '../helpers/raw-connection.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

describe('limits', () => {
  let dir: string;
  let file: string;

  beforeAll(async () => {
    dir = await makeTempDir();
    file = path.join(dir, 'disk.raw');
    await fs.writeFile(file, Buffer.alloc(1 << 20));
  });
  afterAll(() => removeDir(dir));

  async function withServer(options: Omit<ServerOptions, 'logger'>, body: (server: NbdServer, port: number) => Promise<void>, host = '127.0.0.1'): Promise<void> {
    const exp = new Export(new Stack([await openRaw(file)]), { name: 'd' });
    const server = new NbdServer([exp], { logger: pino({ level: 'silent' }), ...options });
    const { port } = await server.listenTcp(host, 0);
    try {
      await body(server, port);
    } finally {
      await server.close();
    }
  }

  it('--max-connections refuses connections beyond the limit and accepts again when one leaves', async () => {
    await withServer({ maxConnections: 2 }, async (_server, port) => {
      const target = { kind: 'tcp' as const, host: '127.0.0.1', port };
      const a = await NbdClient.connect(target, { exportName: 'd' });
      const b = await NbdClient.connect(target, { exportName: 'd' });
      await expect(NbdClient.connect(target, { exportName: 'd' })).rejects.toThrow();
      await a.disconnect();
      await new Promise((r) => setTimeout(r, 50));
      const c = await NbdClient.connect(target, { exportName: 'd' });
      await Promise.all([b.disconnect(), c.disconnect()]);
    });
  });

  it('drops a client that does not finish negotiation in time', async () => {
    await withServer({ session: { negotiationTimeoutMs: 300 } }, async (_server, port) => {
      const idle = await RawConnection.open(port);
      await idle.read(18);
      const started = Date.now();
      expect(await idle.closedWithin(3000)).toBe(true);
      expect(Date.now() - started).toBeGreaterThanOrEqual(200);
      // A client that finished negotiating is not timed out.
      const c = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port }, { exportName: 'd' });
      await new Promise((r) => setTimeout(r, 500));
      expect((await c.pread(0, 512)).length).toBe(512);
      await c.disconnect();
    });
  });

  it('--allow refuses addresses outside the list', async () => {
    const onlyTen = new net.BlockList();
    onlyTen.addSubnet('10.0.0.0', 8, 'ipv4');
    await withServer({ allow: onlyTen }, async (_server, port) => {
      const c = await RawConnection.open(port);
      expect(await c.closedWithin(2000)).toBe(true);
      expect(c.pending).toBe(0);
    });
    const loopback = new net.BlockList();
    loopback.addSubnet('127.0.0.0', 8, 'ipv4');
    loopback.addAddress('::1', 'ipv6');
    await withServer({ allow: loopback }, async (_server, port) => {
      const c = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port }, { exportName: 'd' });
      await c.disconnect();
    });
    await withServer(
      { allow: loopback },
      async (_server, port) => {
        const c = await NbdClient.connect({ kind: 'tcp', host: '::1', port }, { exportName: 'd' });
        await c.disconnect();
      },
      '::1',
    );
  });

  it('sets the file mode of unix sockets', async () => {
    const exp = new Export(new Stack([await openRaw(file)]), { name: 'd' });
    const server = new NbdServer([exp], { logger: pino({ level: 'silent' }), socketMode: 0o600 });
    const sock = path.join(dir, 's.sock');
    await server.listenUnix(sock);
    try {
      expect((await fs.stat(sock)).mode & 0o777).toBe(0o600);
    } finally {
      await server.close();
    }
  });
});
