/**
 * The admin API's HTTP layer in process: route parameters, HEAD, errors a handler throws, a
 * client that never finishes its request (408, connection closed), and close() ending
 * open connections instead of waiting for them.
 */
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpError, JsonServer } from '../../src/server/http-json.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

function get(socketPath: string, method: string, urlPath: string, agent?: http.Agent): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: urlPath, ...(agent ? { agent } : {}) }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('JsonServer', () => {
  let dir: string;
  let socket: string;
  let server: JsonServer;
  const mapped: unknown[] = [];

  beforeAll(async () => {
    dir = await makeTempDir();
    socket = path.join(dir, 'http.sock');
    server = new JsonServer({
      bodyLimit: 1024,
      headersTimeoutMs: 300,
      requestTimeoutMs: 300,
      mapError: (err) => {
        mapped.push(err);
        return new HttpError(500, err instanceof Error ? err.message : String(err));
      },
      routes: [
        { method: 'GET', path: '/items/:name', handle: async ({ params }) => ({ status: 200, json: { name: params.name } }) },
        { method: 'GET', path: '/broken', handle: () => Promise.reject(new Error('a bug')) },
        { method: 'GET', path: '/text', handle: async () => ({ status: 200, text: 'plain', contentType: 'text/plain' }) },
      ],
    });
    await server.listenUnix(socket);
  });
  afterAll(async () => {
    await server.close();
    await removeDir(dir);
  });

  it('decodes route parameters, matches an empty one, and answers HEAD without a body', async () => {
    expect(JSON.parse((await get(socket, 'GET', '/items/a%20b%2Fc?x=1')).body)).toEqual({ name: 'a b/c' });
    expect(JSON.parse((await get(socket, 'GET', '/items/')).body)).toEqual({ name: '' });
    expect((await get(socket, 'GET', '/items/%E0')).status).toBe(400);
    const head = await get(socket, 'HEAD', '/text');
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe('5');
    expect(head.body).toBe('');
  });

  it('turns an error thrown by a handler into the status mapError gives, with the message', async () => {
    const broken = await get(socket, 'GET', '/broken');
    expect(broken.status).toBe(500);
    expect(JSON.parse(broken.body)).toEqual({ error: 'a bug' });
    expect(mapped).toHaveLength(1);
  });

  it('answers 408 and closes a connection whose request never ends', async () => {
    const conn = net.connect(socket);
    let received = '';
    conn.on('data', (d: Buffer) => (received += d.toString()));
    conn.write('GET /text HTTP/1.1\r\nHost: x\r\n');
    // The headers are never finished: the server gives up on its own.
    await new Promise<void>((resolve) => conn.once('close', () => resolve()));
    expect(received).toMatch(/^HTTP\/1\.1 408/);
  });

  it('close() ends open connections instead of waiting for them', async () => {
    // A request whose handler never answers: server.close() alone would wait for it forever.
    let entered!: () => void;
    const inHandler = new Promise<void>((resolve) => (entered = resolve));
    const other = new JsonServer({
      bodyLimit: 16,
      mapError: () => new HttpError(500, 'x'),
      routes: [{ method: 'GET', path: '/hang', handle: () => (entered(), new Promise(() => undefined)) }],
    });
    const otherSocket = path.join(dir, 'other.sock');
    await other.listenUnix(otherSocket);
    const pending = get(otherSocket, 'GET', '/hang').then(
      () => 'answered',
      (err: NodeJS.ErrnoException) => err.code ?? String(err),
    );
    await inHandler;
    await other.close();
    expect(await pending).toBe('ECONNRESET');
  });
});
