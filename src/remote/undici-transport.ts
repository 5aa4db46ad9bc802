/**
 * The Transport over undici 7: one Agent per remote base, a pool of keep-alive HTTP/1.1
 * connections per origin (no pipelining: a stalled response must not hold others up), TLS
 * with the system's CAs plus an optional extra CA file, and connect, header and body timeouts.
 * Redirects are not followed here; remote-object.ts follows (and caches) them itself.
 */
import fs from 'node:fs/promises';
import tls from 'node:tls';
import { Agent } from 'undici';
import { BodyLengthError, type HttpResponse, type Transport } from './transport.js';
import type { ResolvedRemoteOptions } from './options.js';

export interface UndiciTransport {
  send: Transport;
  close(): Promise<void>;
}

type Body = AsyncIterable<Buffer> & { destroy(err?: Error): unknown };

function flattenHeaders(raw: Record<string, string | string[] | undefined>): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(raw)) out[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  return out;
}

export async function readCaFile(caFile: string | null): Promise<string[] | undefined> {
  if (caFile === null) return undefined;
  const pem = await fs.readFile(caFile, 'utf8');
  return [...tls.rootCertificates, pem];
}

export async function createUndiciTransport(options: ResolvedRemoteOptions): Promise<UndiciTransport> {
  const ca = await readCaFile(options.caFile);
  const agent = new Agent({
    connections: options.connections,
    pipelining: 1,
    allowH2: false,
    keepAliveTimeout: 30_000,
    headersTimeout: options.timeouts.headersMs,
    bodyTimeout: options.timeouts.bodyMs,
    connect: { timeout: options.timeouts.connectMs, ...(ca ? { ca } : {}) },
  });
  const send: Transport = async (request) => {
    const res = await agent.request({
      origin: request.url.origin,
      path: `${request.url.pathname}${request.url.search}`,
      method: request.method,
      headers: { ...request.headers },
    });
    const body = res.body as unknown as Body;
    // A body dropped unread is destroyed, which emits an error; with no listener that error
    // would be an uncaught exception. Readers still see errors through their iterator.
    res.body.on('error', () => undefined);
    const response: HttpResponse = {
      status: res.statusCode,
      headers: flattenHeaders(res.headers),
      readExactly: async (into) => {
        let filled = 0;
        for await (const chunk of body) {
          if (filled + chunk.length > into.length) {
            body.destroy();
            throw new BodyLengthError(`the response body is longer than the ${into.length} bytes asked for`);
          }
          chunk.copy(into, filled);
          filled += chunk.length;
        }
        if (filled !== into.length) throw new BodyLengthError(`the response body ended after ${filled} of ${into.length} bytes`);
      },
      text: async (limit) => {
        const parts: Buffer[] = [];
        let got = 0;
        for await (const chunk of body) {
          parts.push(chunk);
          got += chunk.length;
          if (got >= limit) {
            body.destroy();
            break;
          }
        }
        return Buffer.concat(parts).subarray(0, limit).toString('utf8');
      },
      discard: () => {
        // Closing the connection is cheaper than draining a large body; a small or empty one
        // (redirects, HEAD) is drained so the connection stays in the pool.
        const length = Number(res.headers['content-length'] ?? NaN);
        if (request.method === 'HEAD' || (Number.isFinite(length) && length <= 64 * 1024)) {
          res.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
        } else body.destroy();
      },
    };
    return response;
  };
  return { send, close: () => agent.close() };
}
