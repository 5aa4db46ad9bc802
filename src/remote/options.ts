/**
 * What a remote base can be tuned with (the CLI's remote options fill it). Every field has a
 * default; `resolveRemoteOptions` fills them in and refuses values that cannot work.
 */
import type { Clock } from './retry.js';

export type S3Addressing = 'auto' | 'path' | 'virtual';

export interface RemoteTimeouts {
  /** Connecting (TCP and TLS). */
  connectMs?: number;
  /** From sending a request to having the response headers. */
  headersMs?: number;
  /** Silence while a response body is arriving. */
  bodyMs?: number;
}

export interface RemoteOptions {
  /** Reads are aligned to and cached in blocks of this many bytes (a power of two, 4 KiB–16 MiB). */
  blockSize?: number;
  /** Keep-alive connections per origin. */
  connections?: number;
  /** A PEM file of CA certificates trusted besides the system's. */
  caFile?: string;
  /** Extra request headers, sent to the URL's own origin only. */
  headers?: Readonly<Record<string, string>>;
  /** S3: endpoint of an S3-compatible store (default AWS_ENDPOINT_URL, else AWS). */
  s3Endpoint?: string;
  /** S3: bucket in the path or in the host name (auto: path for custom endpoints). */
  s3Addressing?: S3Addressing;
  /** Attempts after the first for a read that fails in a way worth trying again. */
  retries?: number;
  timeouts?: RemoteTimeouts;
  /** Bytes of blocks kept in memory. */
  cacheBytes?: number;
  /** Largest single ranged GET, in bytes (adjacent missing blocks are merged up to it). */
  maxRequestBytes?: number;
  /** Largest sequential readahead window, in bytes. */
  readaheadMaxBytes?: number;
  /** Redirects followed for one request. */
  maxRedirects?: number;
  /** Told once about each problem worth a warning (unpinnable base, base changed, ...). */
  onWarning?(message: string): void;
  /** Environment for S3 credentials and region (default process.env). */
  env?: Readonly<Record<string, string | undefined>>;
  /** Time and randomness for the retry schedule (tests inject them). */
  clock?: Clock;
}

export interface ResolvedRemoteOptions {
  blockSize: number;
  connections: number;
  caFile: string | null;
  headers: Readonly<Record<string, string>>;
  s3Endpoint: string | null;
  s3Addressing: S3Addressing;
  retries: number;
  timeouts: Required<RemoteTimeouts>;
  cacheBytes: number;
  maxRequestBytes: number;
  readaheadMaxBytes: number;
  maxRedirects: number;
  onWarning: (message: string) => void;
  env: Readonly<Record<string, string | undefined>>;
  clock: Clock | null;
}

export const REMOTE_DEFAULTS = {
  blockSize: 64 * 1024,
  connections: 16,
  retries: 5,
  connectMs: 10_000,
  headersMs: 30_000,
  bodyMs: 30_000,
  cacheBytes: 32 * 1024 * 1024,
  maxRequestBytes: 4 * 1024 * 1024,
  readaheadMaxBytes: 8 * 1024 * 1024,
  maxRedirects: 5,
} as const;

const MIN_BLOCK = 4096;
const MAX_BLOCK = 16 * 1024 * 1024;

/** Thrown for an option value that cannot work; the CLI shows it as a usage error. */
export class RemoteOptionError extends Error {
  override name = 'RemoteOptionError';
}

function whole(name: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) throw new RemoteOptionError(`${name} must be a whole number from ${min} to ${max}, not ${value}`);
  return value;
}

export function resolveRemoteOptions(o: RemoteOptions = {}): ResolvedRemoteOptions {
  const blockSize = whole('remote block size', o.blockSize ?? REMOTE_DEFAULTS.blockSize, MIN_BLOCK, MAX_BLOCK);
  if ((blockSize & (blockSize - 1)) !== 0) throw new RemoteOptionError(`remote block size must be a power of two, not ${blockSize}`);
  const t = o.timeouts ?? {};
  return {
    blockSize,
    connections: whole('remote connections', o.connections ?? REMOTE_DEFAULTS.connections, 1, 1024),
    caFile: o.caFile ?? null,
    headers: o.headers ?? {},
    s3Endpoint: o.s3Endpoint ?? null,
    s3Addressing: o.s3Addressing ?? 'auto',
    retries: whole('remote retries', o.retries ?? REMOTE_DEFAULTS.retries, 0, 100),
    timeouts: {
      connectMs: whole('connect timeout', t.connectMs ?? REMOTE_DEFAULTS.connectMs, 1),
      headersMs: whole('headers timeout', t.headersMs ?? REMOTE_DEFAULTS.headersMs, 1),
      bodyMs: whole('body timeout', t.bodyMs ?? REMOTE_DEFAULTS.bodyMs, 1),
    },
    // A request covers at least one block.
    maxRequestBytes: Math.max(blockSize, o.maxRequestBytes ?? REMOTE_DEFAULTS.maxRequestBytes),
    cacheBytes: whole('remote cache bytes', o.cacheBytes ?? REMOTE_DEFAULTS.cacheBytes, 0),
    readaheadMaxBytes: whole('readahead bytes', o.readaheadMaxBytes ?? REMOTE_DEFAULTS.readaheadMaxBytes, 0),
    maxRedirects: whole('redirects', o.maxRedirects ?? REMOTE_DEFAULTS.maxRedirects, 0, 20),
    onWarning: o.onWarning ?? (() => undefined),
    env: o.env ?? process.env,
    clock: o.clock ?? null,
  };
}
