/**
 * The admin API: HTTP (fastify) on a unix socket, or on a loopback TCP port with a bearer
 * token. It lists exports with their layers, connections and stats; adds and removes exports
 * (a removed export finishes what is in flight first); snapshots an export live; reports health;
 * and serves Prometheus metrics at /metrics.
 */
import { timingSafeEqual } from 'node:crypto';
import fs from 'node:fs/promises';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { displaySource } from '../remote/source.js';
import { StackbdError } from '../block/errors.js';
import { appendLiveOverlay } from '../stack/live-snapshot.js';
import type { Export } from './export.js';
import type { ServerMetrics } from './metrics.js';
import type { NbdServer } from './server.js';

export interface ExportRequest {
  name: string;
  layers: string[];
  readOnly?: boolean;
  description?: string;
}

export interface AdminApiOptions {
  server: NbdServer;
  metrics: ServerMetrics;
  /** Opens the stack of a new export (the same way the command line does). */
  openExport: (request: ExportRequest) => Promise<Export>;
  logger: Logger;
  /** Required for TCP listeners: clients send `Authorization: Bearer TOKEN`. */
  token?: string;
}

export function describeExport(exp: Export): Record<string, unknown> {
  return {
    name: exp.name,
    description: exp.description,
    size: exp.size,
    readOnly: exp.readOnly,
    connections: exp.connectionCount,
    layers: exp.stack.layers.map((l) => ({
      path: l.path,
      format: l.format,
      layerType: l.layerType,
      layerUUID: l.layerUUID,
      parentUUID: l.parentUUID,
      size: l.size,
      blockSize: l.blockSize,
    })),
    cache: exp.stack.hasCache ? exp.stack.cacheStats : null,
    stats: exp.stats.toJSON(),
  };
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function isStringList(v: unknown): v is string[] {
  return Array.isArray(v) && v.length > 0 && v.every((s) => typeof s === 'string' && s !== '');
}

function parseExportRequest(body: unknown): ExportRequest {
  const b = body as Partial<Record<keyof ExportRequest, unknown>> | null;
  if (!b || typeof b !== 'object') throw new HttpError(400, 'expected a JSON object {name, layers, readOnly?, description?}');
  if (typeof b.name !== 'string') throw new HttpError(400, '"name" must be a string');
  if (!isStringList(b.layers)) throw new HttpError(400, '"layers" must be a non-empty list of image paths, bottom first');
  if (b.readOnly !== undefined && typeof b.readOnly !== 'boolean') throw new HttpError(400, '"readOnly" must be true or false');
  if (b.description !== undefined && typeof b.description !== 'string') throw new HttpError(400, '"description" must be a string');
  return { name: b.name, layers: b.layers, readOnly: b.readOnly === true, ...(typeof b.description === 'string' ? { description: b.description } : {}) };
}

function tokenMatches(header: string | undefined, token: string): boolean {
  const given = Buffer.from(header?.replace(/^Bearer\s+/i, '') ?? '');
  const wanted = Buffer.from(token);
  return given.length === wanted.length && timingSafeEqual(given, wanted);
}

export function buildAdminApi(options: AdminApiOptions): FastifyInstance {
  const { server, metrics } = options;
  const app = Fastify({ logger: false, bodyLimit: 64 * 1024, forceCloseConnections: true });
  const started = Date.now();

  if (options.token) {
    const token = options.token;
    app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
      if (!tokenMatches(request.headers.authorization, token)) await reply.code(401).send({ error: 'missing or wrong bearer token' });
    });
  }

  app.setErrorHandler((err: unknown, _request, reply) => {
    if (err instanceof HttpError) return reply.code(err.status).send({ error: err.message });
    if (err instanceof StackbdError) return reply.code(400).send({ error: err.message });
    // A file that cannot be opened (ENOENT, EACCES, ...) is a mistake in the request.
    const sys = err as NodeJS.ErrnoException;
    if (typeof sys.code === 'string' && typeof sys.syscall === 'string') return reply.code(400).send({ error: sys.message });
    const e = err as { statusCode?: number; message?: string };
    if (typeof e.statusCode === 'number' && e.statusCode < 500) return reply.code(e.statusCode).send({ error: e.message });
    options.logger.error({ err }, 'admin API request failed');
    return reply.code(500).send({ error: err instanceof Error ? err.message : String(err) });
  });

  const find = (name: string): Export => {
    const exp = server.get(name);
    if (!exp) throw new HttpError(404, `no export named "${name}"`);
    return exp;
  };

  app.get('/health', async () => ({
    status: 'ok',
    uptimeSeconds: Math.round((Date.now() - started) / 1000),
    exports: server.list().length,
    connections: server.connectionCount,
  }));

  app.get('/exports', async () => server.list().map(describeExport));

  app.get<{ Params: { name: string } }>('/exports/:name', async (request) => describeExport(find(request.params.name)));

  app.post('/exports', async (request, reply) => {
    const wanted = parseExportRequest(request.body);
    if (server.get(wanted.name)) throw new HttpError(409, `export "${wanted.name}" exists already`);
    const exp = await options.openExport(wanted);
    try {
      server.addExport(exp);
    } catch (err) {
      await exp.close();
      throw new HttpError(409, err instanceof Error ? err.message : String(err));
    }
    metrics.attach(exp);
    options.logger.info({ export: exp.name, layers: wanted.layers.map(displaySource) }, 'export added');
    return reply.code(201).send(describeExport(exp));
  });

  app.delete<{ Params: { name: string } }>('/exports/:name', async (request, reply) => {
    const exp = find(request.params.name);
    await server.removeExport(exp.name);
    metrics.detach(exp);
    return reply.code(204).send();
  });

  app.post<{ Params: { name: string } }>('/exports/:name/snapshot', async (request, reply) => {
    const exp = find(request.params.name);
    const body = request.body as { path?: unknown } | null;
    if (!body || typeof body.path !== 'string' || body.path === '') throw new HttpError(400, 'expected {"path": "new-overlay.asif"}');
    const path = body.path;
    if (await fs.stat(path).then(() => true, () => false)) throw new HttpError(409, `${path} exists already`);
    if (exp.readOnly) throw new HttpError(409, `export "${exp.name}" is read-only`);
    await exp.snapshot((stack) => appendLiveOverlay(stack, path));
    return reply.code(201).send(describeExport(exp));
  });

  app.get('/metrics', async (_request, reply) => {
    const text = await metrics.render();
    return reply.header('content-type', metrics.contentType).send(text);
  });

  return app;
}
