/**
 * The admin API: HTTP (node:http, see http-json.ts) on a unix socket, on a loopback TCP port,
 * or both at once; with a token, every request must send it as a bearer token. It lists exports with their layers, connections and stats; adds and removes exports
 * (a removed export finishes what is in flight first); snapshots an export live; warms an
 * export's cache layer while it serves (a few pieces at a time, clients go on); reports health;
 * and serves Prometheus metrics at /metrics.
 */
import { timingSafeEqual } from 'node:crypto';
import fs from 'node:fs/promises';
import type { Logger } from 'pino';
import { displaySource } from '../remote/source.js';
import { StackbdError } from '../block/errors.js';
import { appendLiveOverlay } from '../stack/live-snapshot.js';
import { warmStack, type WarmRange } from '../stack/warm.js';
import { RangesFileError, readRangesFile } from '../stack/warm-ranges.js';
import type { Export } from './export.js';
import { HttpError, JsonServer, type Route } from './http-json.js';
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

/** Pieces a warm of a served export keeps in flight unless asked otherwise (clients go on meanwhile). */
const WARM_JOBS = 4;

async function parseWarmRequest(body: unknown): Promise<{ ranges: WarmRange[] | null; jobs: number }> {
  const b = (body ?? {}) as { ranges?: unknown; rangesFile?: unknown; jobs?: unknown };
  if (typeof b !== 'object' || Array.isArray(b)) throw new HttpError(400, 'expected a JSON object {ranges?, rangesFile?, jobs?}');
  const jobs = b.jobs === undefined ? WARM_JOBS : b.jobs;
  if (typeof jobs !== 'number' || !Number.isInteger(jobs) || jobs < 1 || jobs > 64) throw new HttpError(400, '"jobs" must be a whole number from 1 to 64');
  if (b.ranges !== undefined && b.rangesFile !== undefined) throw new HttpError(400, 'give "ranges" or "rangesFile", not both');
  if (typeof b.rangesFile === 'string') {
    try {
      return { ranges: await readRangesFile(b.rangesFile), jobs };
    } catch (err) {
      if (err instanceof RangesFileError) throw new HttpError(400, err.message);
      throw err;
    }
  }
  if (b.rangesFile !== undefined) throw new HttpError(400, '"rangesFile" must be a path');
  if (b.ranges === undefined) return { ranges: null, jobs };
  const ok = Array.isArray(b.ranges) && b.ranges.every((r) => Array.isArray(r) && r.length === 2 && r.every((n) => Number.isSafeInteger(n) && (n as number) >= 0));
  if (!ok) throw new HttpError(400, '"ranges" must be a list of [offset, length] pairs of whole numbers');
  return { ranges: (b.ranges as Array<[number, number]>).map(([offset, length]) => ({ offset, length })), jobs };
}

function tokenMatches(header: string | undefined, token: string): boolean {
  const given = Buffer.from(header?.replace(/^Bearer\s+/i, '') ?? '');
  const wanted = Buffer.from(token);
  return given.length === wanted.length && timingSafeEqual(given, wanted);
}

/** The status and message a failed request gets; a failure that is not the client's is logged. */
function mapError(err: unknown, logger: Logger): HttpError {
  if (err instanceof StackbdError) return new HttpError(400, err.message);
  // A file that cannot be opened (ENOENT, EACCES, ...) is a mistake in the request.
  const sys = err as NodeJS.ErrnoException;
  if (typeof sys.code === 'string' && typeof sys.syscall === 'string') return new HttpError(400, sys.message);
  logger.error({ err }, 'admin API request failed');
  return new HttpError(500, err instanceof Error ? err.message : String(err));
}

function routes(options: AdminApiOptions): Route[] {
  const { server, metrics } = options;
  const started = Date.now();
  const find = (name: string): Export => {
    const exp = server.get(name);
    if (!exp) throw new HttpError(404, `no export named "${name}"`);
    return exp;
  };
  return [
    {
      method: 'GET',
      path: '/health',
      handle: async () => ({
        status: 200,
        json: { status: 'ok', uptimeSeconds: Math.round((Date.now() - started) / 1000), exports: server.list().length, connections: server.connectionCount },
      }),
    },
    { method: 'GET', path: '/exports', handle: async () => ({ status: 200, json: server.list().map(describeExport) }) },
    { method: 'GET', path: '/exports/:name', handle: async ({ params }) => ({ status: 200, json: describeExport(find(params.name)) }) },
    {
      method: 'POST',
      path: '/exports',
      handle: async ({ body }) => {
        const wanted = parseExportRequest(body);
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
        return { status: 201, json: describeExport(exp) };
      },
    },
    {
      method: 'DELETE',
      path: '/exports/:name',
      handle: async ({ params }) => {
        const exp = find(params.name);
        await server.removeExport(exp.name);
        metrics.detach(exp);
        return { status: 204 };
      },
    },
    {
      method: 'POST',
      path: '/exports/:name/snapshot',
      handle: async ({ params, body }) => {
        const exp = find(params.name);
        const b = body as { path?: unknown } | null | undefined;
        if (!b || typeof b.path !== 'string' || b.path === '') throw new HttpError(400, 'expected {"path": "new-overlay.asif"}');
        const path = b.path;
        if (await fs.stat(path).then(() => true, () => false)) throw new HttpError(409, `${path} exists already`);
        if (exp.readOnly) throw new HttpError(409, `export "${exp.name}" is read-only`);
        await exp.snapshot((stack) => appendLiveOverlay(stack, path));
        return { status: 201, json: describeExport(exp) };
      },
    },
    {
      method: 'POST',
      path: '/exports/:name/warm',
      handle: async ({ params, body }) => {
        const exp = find(params.name);
        const { ranges, jobs } = await parseWarmRequest(body);
        if (!exp.stack.hasCache) throw new HttpError(409, `export "${exp.name}" has no cache layer to warm`);
        options.logger.info({ export: exp.name, ranges: ranges?.length ?? 'all', jobs }, 'warm started');
        const result = await warmStack(exp.stack, ranges, { jobs, onWarning: (message) => options.logger.warn({ export: exp.name }, message) });
        // What the warm stored is made durable now, not at the next tick of the sync timer.
        await exp.syncIfDirty('warm finished');
        options.logger.info({ export: exp.name, ...result }, 'warm finished');
        return { status: 200, json: { export: exp.name, ...result } };
      },
    },
    { method: 'GET', path: '/metrics', handle: async () => ({ status: 200, text: await metrics.render(), contentType: metrics.contentType }) },
  ];
}

/** The admin API's listeners; nothing listens until listenUnix / listenTcp. */
export function buildAdminApi(options: AdminApiOptions): JsonServer {
  const token = options.token;
  return new JsonServer({
    routes: routes(options),
    bodyLimit: 64 * 1024,
    mapError: (err) => mapError(err, options.logger),
    ...(token
      ? {
          authorize: (headers) => {
            if (!tokenMatches(headers.authorization, token)) throw new HttpError(401, 'missing or wrong bearer token', { 'www-authenticate': 'Bearer' });
          },
        }
      : {}),
  });
}
