/**
 * A small JSON-over-HTTP layer on node:http for the admin API: a route table (method and path
 * pattern), request bodies read up to a limit and parsed as JSON, errors answered as
 * `{"error": "..."}`, and listeners on unix sockets and TCP that share one handler and close
 * together (open connections included). Its answers: 404 for an unknown path, 405 (with Allow)
 * for a known path and another method, 413 for a body over the limit, 415 for a body that is
 * not JSON, 400 for JSON that does not parse, 408 for a request that is not sent in time.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** A failure with the HTTP status the client gets. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export interface JsonRequest {
  /** Path segments matched by `:name` in the route, decoded. */
  params: Record<string, string>;
  /** The parsed JSON body; undefined when there was none. */
  body: unknown;
  headers: http.IncomingHttpHeaders;
}

/** What a handler answers: a status and a JSON value, or text with its content type. */
export type JsonReply = { status: number; json?: unknown; headers?: Record<string, string> } | { status: number; text: string; contentType: string };

export interface Route {
  method: 'GET' | 'POST' | 'DELETE';
  /** e.g. '/exports/:name/snapshot'; a `:name` segment matches one segment, empty included. */
  path: string;
  handle(request: JsonRequest): Promise<JsonReply>;
}

export interface JsonServerOptions {
  routes: Route[];
  /** Largest request body taken, in bytes. */
  bodyLimit: number;
  /** Runs before routing; a thrown HttpError is the answer (e.g. 401). */
  authorize?(headers: http.IncomingHttpHeaders): void;
  /** Turns any other thrown value into a status and message (and logs what it must). */
  mapError(err: unknown): HttpError;
  /** Milliseconds a client may take to send its headers, and its whole request. */
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
}

interface MatchedRoute {
  route: Route;
  params: Record<string, string>;
}

function matchPath(pattern: string, path: string): Record<string, string> | null {
  const want = pattern.split('/');
  const got = path.split('/');
  if (want.length !== got.length) return null;
  const params: Record<string, string> = {};
  for (const [i, segment] of want.entries()) {
    if (segment.startsWith(':')) {
      try {
        params[segment.slice(1)] = decodeURIComponent(got[i]);
      } catch {
        throw new HttpError(400, `${path}: bad percent-encoding`);
      }
    } else if (segment !== got[i]) {
      return null;
    }
  }
  return params;
}

/** The route for a request, or the HTTP error that answers it (404, or 405 with the allowed methods). */
function findRoute(routes: Route[], method: string, path: string): MatchedRoute | { allowed: string[] } {
  const allowed: string[] = [];
  for (const route of routes) {
    const params = matchPath(route.path, path);
    if (!params) continue;
    // HEAD is a GET without the body (node:http leaves the body out of HEAD replies).
    if (route.method === method || (method === 'HEAD' && route.method === 'GET')) return { route, params };
    allowed.push(route.method);
  }
  return { allowed };
}

function isJsonType(contentType: string | undefined): boolean {
  const type = (contentType ?? '').split(';')[0].trim().toLowerCase();
  return type === 'application/json' || /^application\/[\w.+-]+\+json$/.test(type);
}

/** Reads the body up to `limit` bytes; undefined when it is empty. */
async function readJsonBody(request: http.IncomingMessage, limit: number): Promise<unknown> {
  const declared = Number(request.headers['content-length'] ?? 0);
  if (declared > limit) throw new HttpError(413, `request body of ${declared} bytes is over the limit of ${limit}`);
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    length += chunk.length;
    if (length > limit) throw new HttpError(413, `request body is over the limit of ${limit} bytes`);
    chunks.push(chunk);
  }
  if (length === 0) return undefined;
  if (!isJsonType(request.headers['content-type'])) throw new HttpError(415, 'the request body must be JSON (content-type: application/json)');
  try {
    return JSON.parse(Buffer.concat(chunks, length).toString('utf8')) as unknown;
  } catch (err) {
    throw new HttpError(400, `the request body is not valid JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function send(response: http.ServerResponse, reply: JsonReply): void {
  if ('text' in reply) {
    response.writeHead(reply.status, { 'content-type': reply.contentType, 'content-length': Buffer.byteLength(reply.text) });
    response.end(reply.text);
    return;
  }
  if (reply.json === undefined) {
    response.writeHead(reply.status).end();
    return;
  }
  const text = JSON.stringify(reply.json);
  response.writeHead(reply.status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  response.end(text);
}

async function answer(options: JsonServerOptions, request: http.IncomingMessage): Promise<JsonReply> {
  try {
    options.authorize?.(request.headers);
    const method = request.method ?? 'GET';
    const path = (request.url ?? '/').split('?')[0];
    const found = findRoute(options.routes, method, path);
    if ('allowed' in found) {
      if (found.allowed.length === 0) throw new HttpError(404, `no route ${method} ${path}`);
      throw new HttpError(405, `${path} takes ${found.allowed.join(', ')}, not ${method}`, { allow: found.allowed.join(', ') });
    }
    const body = method === 'GET' || method === 'HEAD' ? undefined : await readJsonBody(request, options.bodyLimit);
    return await found.route.handle({ params: found.params, body, headers: request.headers });
  } catch (err) {
    const failure = err instanceof HttpError ? err : options.mapError(err);
    return { status: failure.status, json: { error: failure.message }, headers: failure.headers };
  }
}

/** HTTP listeners that serve one route table; `close` stops them and ends open connections. */
export class JsonServer {
  private readonly servers: http.Server[] = [];

  constructor(private readonly options: JsonServerOptions) {}

  private create(): http.Server {
    const headersTimeout = this.options.headersTimeoutMs ?? 10_000;
    const requestTimeout = Math.max(headersTimeout, this.options.requestTimeoutMs ?? 30_000);
    // node:http checks these timeouts every connectionsCheckingInterval (30 s by default).
    const connectionsCheckingInterval = Math.min(1000, headersTimeout);
    const server = http.createServer({ headersTimeout, requestTimeout, connectionsCheckingInterval }, (request, response) => {
      void answer(this.options, request).then((reply) => {
        if ('headers' in reply) for (const [name, value] of Object.entries(reply.headers ?? {})) response.setHeader(name, value);
        // A body that was refused unread stays in the socket: close the connection after this reply.
        if (!request.complete) response.setHeader('connection', 'close');
        send(response, reply);
      });
    });
    this.servers.push(server);
    return server;
  }

  private start(server: http.Server, listen: (s: http.Server) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.once('listening', () => {
        server.off('error', reject);
        resolve();
      });
      listen(server);
    });
  }

  listenUnix(path: string): Promise<void> {
    return this.start(this.create(), (s) => s.listen(path));
  }

  async listenTcp(host: string, port: number): Promise<AddressInfo> {
    const server = this.create();
    await this.start(server, (s) => s.listen({ host, port }));
    return server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    await Promise.all(
      this.servers.map(
        (server) =>
          new Promise<void>((resolve) => {
            if (!server.listening) return resolve();
            server.close(() => resolve());
            server.closeAllConnections();
          }),
      ),
    );
  }
}
