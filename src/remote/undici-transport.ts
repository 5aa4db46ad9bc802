/**
 * The Transport over undici 7: for each remote base, a pool of keep-alive HTTP/1.1
 * connections per origin (no pipelining: a stalled response must not hold others up), TLS
 * with the system's CAs plus an optional extra CA file, and connect, header and body timeouts.
 * Redirects are not followed here; remote-object.ts follows (and caches) them itself.
 */
import fs from 'node:fs/promises';
import tls from 'node:tls';
import { Pool } from 'undici';
import { BodyLengthError, type HttpResponse, type Transport } from './transport.js';
import type { ResolvedRemoteOptions } from './options.js';

export interface UndiciTransport {
  send: Transport;
  close(): Promise<void>;
}

const MAX_ORIGINS = 4;

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
  // One Pool per origin, kept here rather than in an undici Agent: undici 7's Agent closes an
  // origin's whole pool when a connection drops at the wrong moment (a reset, a HEAD the server
  // closes), which turned every later request into a new connection.
  const pools = new Map<string, Pool>();
  const poolFor = (origin: string): Pool => {
    let pool = pools.get(origin);
    if (!pool) {
      // Redirects could name ever new origins; keep the few most recent.
      if (pools.size >= MAX_ORIGINS) {
        const [oldest, old] = pools.entries().next().value as [string, Pool];
        pools.delete(oldest);
        void old.close().catch(() => undefined);
      }
      pool = new Pool(origin, {
        connections: options.connections,
        pipelining: 1,
        allowH2: false,
        keepAliveTimeout: 30_000,
        headersTimeout: options.timeouts.headersMs,
        bodyTimeout: options.timeouts.bodyMs,
        connect: { timeout: options.timeouts.connectMs, ...(ca ? { ca } : {}) },
      });
      pools.set(origin, pool);
    }
    return pool;
  };
  const send: Transport = async (request) => {
    const res = await poolFor(request.url.origin).request({
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
      readPieces: async (length) => {
        const pieces: Buffer[] = [];
        let got = 0;
        for await (const chunk of body) {
          got += chunk.length;
          if (got > length) {
            body.destroy();
            throw new BodyLengthError(`the response body is longer than the ${length} bytes asked for`);
          }
          pieces.push(chunk);
        }
        if (got !== length) throw new BodyLengthError(`the response body ended after ${got} of ${length} bytes`);
        return pieces;
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
          // (Read to its end, not dump()ed: dump() judges a HEAD by its Content-Length and drops the connection.)
          res.body.arrayBuffer().catch(() => undefined);
        } else body.destroy();
      },
    };
    return response;
  };
  return {
    send,
    // Closing drops what is still in flight (readahead nobody waits for) instead of waiting for it.
    close: async () => {
      const all = [...pools.values()];
      pools.clear();
      await Promise.all(all.map((p) => p.destroy()));
    },
  };
}
