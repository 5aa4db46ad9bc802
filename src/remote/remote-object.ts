/**
 * One remote object read by ranged GETs: how it is found (redirects), recognised (the pin) and
 * read safely (every read is conditional on the pin and checked).
 *
 * - States: open (reads served); changed (a read saw 412, 416, another ETag or another size:
 *   the object was replaced, so every later read fails with the same EIO; nothing read after
 *   the change is ever returned); closed.
 * - Pin: a strong ETag is sent as If-Match on every GET; without one, Last-Modified as
 *   If-Unmodified-Since; without either the object cannot be pinned (warned once, still served).
 * - A read must come back 206 with exactly the Content-Range asked for and the whole length;
 *   a 200 (the whole object) is dropped unread. Connection errors, timeouts, short bodies, 5xx
 *   and 429 are tried again with backoff (Retry-After honoured); other 4xx are not.
 * - Redirects: at most `maxRedirects` a request; where the chain ends is remembered and used
 *   directly by later requests, and forgotten (the chain followed again, once) when it fails.
 *   Headers meant for the origin (the header file, userinfo, the S3 signature) go to the URL's
 *   own origin only, never to where a redirect points elsewhere.
 */
import { RequestError } from '../block/errors.js';
import { redactUrl } from './redact.js';
import { RemoteSourceError, xmlErrorCode } from './remote-error.js';
import { DEFAULT_BACKOFF, parseRetryAfter, RetryableError, withRetries, type BackoffPolicy, type Clock } from './retry.js';
import type { HttpRequest, HttpResponse, Transport } from './transport.js';

export interface Validators {
  size: number;
  /** Strong ETag, quotes included; null when the server sends none or a weak one. */
  etag: string | null;
  lastModified: string | null;
}

export interface RemoteObjectOptions {
  url: URL;
  /** How messages name the object (no secrets). */
  display: string;
  transport: Transport;
  /** Sent to the URL's own origin only. */
  headers: Readonly<Record<string, string>>;
  /** Signs a request to the URL's own origin (S3), once per attempt. */
  sign?: (request: HttpRequest) => HttpRequest;
  retries: number;
  maxRedirects: number;
  clock: Clock;
  backoff?: BackoffPolicy;
  onWarning(message: string): void;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
/** Statuses that mean a remembered redirect target no longer works (an expired presigned URL). */
const STALE_LOCATION = new Set([401, 403, 404, 410]);
const ERROR_BODY_LIMIT = 8192;

/** A failure that is final for this request (not worth retrying), already worded for the user. */
class FinalError extends Error {
  override name = 'FinalError';
}

export function parseContentRange(value: string | undefined): { start: number; end: number; total: number | null } | null {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(value?.trim() ?? '');
  if (!m) return null;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? null : Number(m[3]) };
}

export function strongEtag(value: string | undefined): string | null {
  if (!value || value.startsWith('W/')) return null;
  return value.trim();
}

function describeCause(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
}

export class RemoteObject {
  private location: URL | null = null;
  private validators: Validators | null = null;
  private failure: RequestError | null = null;
  /** GETs and HEADs sent, and body bytes received for reads (for `info --json` and tests). */
  readonly stats = { requests: 0, bytes: 0, retries: 0, redirectsFollowed: 0 };

  constructor(private readonly o: RemoteObjectOptions) {}

  get display(): string {
    return this.o.display;
  }

  /** Set once the object was seen to change; every read then fails with it. */
  get changed(): RequestError | null {
    return this.failure;
  }

  get pinned(): Validators {
    if (!this.validators) throw new Error('RemoteObject.probe has not run');
    return this.validators;
  }

  /** The conditional header that pins every GET to the object first seen. */
  private conditional(): Record<string, string> {
    const v = this.validators;
    if (v?.etag) return { 'If-Match': v.etag };
    if (v?.lastModified) return { 'If-Unmodified-Since': v.lastModified };
    return {};
  }

  /** Learns size and validators (HEAD, or a 1-byte GET when HEAD is refused) and checks that ranges work. */
  async probe(): Promise<Validators> {
    try {
      return await withRetries(() => this.probeOnce(), this.o.retries, this.o.backoff ?? DEFAULT_BACKOFF, this.o.clock);
    } catch (err) {
      if (err instanceof RemoteSourceError) throw err;
      throw new RemoteSourceError(this.o.display, err instanceof FinalError ? err.message : `cannot be reached: ${describeCause(err)}`);
    }
  }

  private async probeOnce(): Promise<Validators> {
    let head: Validators | null = null;
    const h = await this.send('HEAD', {});
    h.discard();
    if (h.status >= 200 && h.status < 300) {
      const length = Number(h.headers['content-length']);
      if (Number.isSafeInteger(length)) head = { size: length, etag: strongEtag(h.headers.etag), lastModified: h.headers['last-modified'] ?? null };
    } else if (h.status === 429 || h.status >= 500) {
      this.retryable(h, 'HEAD');
    }
    // Any other refusal of HEAD (presigned GET-only URLs answer 403 or 405) falls back to the
    // GET below, whose error body also says why when the object cannot be read at all.
    const pin: Record<string, string> = head?.etag ? { 'If-Match': head.etag } : head?.lastModified ? { 'If-Unmodified-Since': head.lastModified } : {};
    const g = await this.send('GET', { Range: 'bytes=0-0', ...pin });
    if (g.status === 206) {
      g.discard();
      const range = parseContentRange(g.headers['content-range']);
      if (!range || range.start !== 0 || range.end !== 0 || range.total === null) {
        throw new FinalError(`answered a Range GET with Content-Range "${g.headers['content-range'] ?? ''}", which does not give the object's size`);
      }
      const found: Validators = { size: range.total, etag: strongEtag(g.headers.etag), lastModified: g.headers['last-modified'] ?? null };
      if (head && (head.size !== found.size || (head.etag && found.etag && head.etag !== found.etag))) {
        throw new RetryableError('the object changed while it was being opened');
      }
      this.validators = { size: found.size, etag: found.etag ?? head?.etag ?? null, lastModified: found.lastModified ?? head?.lastModified ?? null };
      if (this.validators.size === 0) throw new FinalError('the object is empty (0 bytes): nothing to serve');
      if (!this.validators.etag && !this.validators.lastModified) {
        this.o.onWarning(`${this.o.display}: the server gives no strong ETag and no Last-Modified, so the base cannot be pinned: a replaced object would not be noticed`);
      }
      return this.validators;
    }
    if (g.status === 200) {
      g.discard();
      throw new FinalError('does not support range requests (a Range GET was answered 200 with the whole object)');
    }
    if (g.status === 412) {
      g.discard();
      throw new RetryableError('the object changed while it was being opened');
    }
    if (g.status === 416) {
      g.discard();
      throw new FinalError('the object is empty (0 bytes): nothing to serve');
    }
    if (g.status === 429 || g.status >= 500) this.retryable(g, 'GET');
    throw new FinalError(await this.explain(g, 'GET'));
  }

  /** The object's bytes [offset, offset + length), exactly, or a RequestError('EIO'). */
  async readRange(offset: number, length: number): Promise<Buffer> {
    const pieces = await this.readPieces(offset, length);
    return pieces.length === 1 ? pieces[0] : Buffer.concat(pieces, length);
  }

  /** Like `readRange`, as the pieces the body arrived in (in order, `length` bytes in all). */
  async readPieces(offset: number, length: number): Promise<Buffer[]> {
    if (this.failure) throw this.failure;
    const range = `bytes=${offset}-${offset + length - 1}`;
    try {
      return await withRetries(
        (n) => {
          if (n > 0) this.stats.retries++;
          return this.readOnce(offset, length);
        },
        this.o.retries,
        this.o.backoff ?? DEFAULT_BACKOFF,
        this.o.clock,
      );
    } catch (err) {
      if (err instanceof RequestError) throw err;
      const tries = err instanceof RetryableError ? ` after ${this.o.retries + 1} attempts` : '';
      throw new RequestError('EIO', `${this.o.display}: GET ${range} failed${tries}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private async readOnce(offset: number, length: number): Promise<Buffer[]> {
    const end = offset + length - 1;
    const res = await this.send('GET', { Range: `bytes=${offset}-${end}`, ...this.conditional() });
    const size = this.pinned.size;
    if (res.status === 206) {
      const range = parseContentRange(res.headers['content-range']);
      const etag = strongEtag(res.headers.etag);
      if (range?.total !== null && range?.total !== undefined && range.total !== size) {
        res.discard();
        this.baseChanged(`its size is now ${range.total} bytes, not ${size}`);
      }
      if (etag && this.pinned.etag && etag !== this.pinned.etag) {
        res.discard();
        this.baseChanged(`its ETag is now ${etag}, not ${this.pinned.etag}`);
      }
      if (!range || range.start !== offset || range.end !== end) {
        res.discard();
        throw new RetryableError(`asked for bytes ${offset}-${end}, got Content-Range "${res.headers['content-range'] ?? ''}"`);
      }
      let pieces: Buffer[];
      try {
        if (res.readPieces) pieces = await res.readPieces(length);
        else {
          const buf = Buffer.allocUnsafe(length);
          await res.readExactly(buf);
          pieces = [buf];
        }
      } catch (err) {
        throw new RetryableError(`the response body broke off: ${describeCause(err)}`);
      }
      this.stats.bytes += length;
      return pieces;
    }
    if (res.status >= 400 && res.status < 500 && res.status !== 412 && res.status !== 416 && res.status !== 429) {
      throw new FinalError(await this.explain(res, 'GET'));
    }
    res.discard();
    if (res.status === 200) throw new RetryableError('answered 200 with the whole object instead of 206 (dropped unread)');
    if (res.status === 412) this.baseChanged('the server answered 412 Precondition Failed to a GET pinned to it');
    if (res.status === 416) this.baseChanged(`the server says bytes ${offset}-${end} are past its end (416)`);
    if (res.status === 429 || res.status >= 500) this.retryable(res, 'GET');
    throw new FinalError(`unexpected HTTP ${res.status}`);
  }

  private baseChanged(detail: string): never {
    if (!this.failure) {
      this.failure = new RequestError(
        'EIO',
        `${this.o.display}: the remote base changed under the stack (${detail}); no read is served from it any more: restore the object or rebuild the stack on the new one`,
      );
      this.o.onWarning(this.failure.message);
    }
    throw this.failure;
  }

  private retryable(res: HttpResponse, method: string): never {
    throw new RetryableError(`${method}: HTTP ${res.status}`, parseRetryAfter(res.headers['retry-after'], this.o.clock.now()));
  }

  private async explain(res: HttpResponse, method: string): Promise<string> {
    const body = await res.text(ERROR_BODY_LIMIT).catch(() => '');
    const code = xmlErrorCode(body);
    return `${method} was refused: HTTP ${res.status}${code ? ` (${code})` : ''}`;
  }

  /** Sends to the remembered redirect target if there is one, else follows redirects from the URL. */
  private async send(method: 'GET' | 'HEAD', extra: Record<string, string>): Promise<HttpResponse> {
    const cached = this.location;
    if (cached) {
      let res: HttpResponse;
      try {
        res = await this.follow(cached, method, extra);
      } catch (err) {
        this.location = null;
        throw err;
      }
      if (!STALE_LOCATION.has(res.status)) return res;
      res.discard();
      this.location = null;
    }
    return this.follow(this.o.url, method, extra);
  }

  private async follow(start: URL, method: 'GET' | 'HEAD', extra: Record<string, string>): Promise<HttpResponse> {
    let url = start;
    for (let hop = 0; ; hop++) {
      const res = await this.dispatch(this.prepare(url, method, extra));
      if (!REDIRECTS.has(res.status)) {
        if (hop > 0 && res.status >= 200 && res.status < 300) this.location = url;
        return res;
      }
      res.discard();
      const location = res.headers.location;
      if (!location) throw new FinalError(`HTTP ${res.status} redirect without a Location`);
      if (hop >= this.o.maxRedirects) throw new FinalError(`more than ${this.o.maxRedirects} redirects`);
      const next = new URL(location, url);
      if (next.protocol !== 'http:' && next.protocol !== 'https:') throw new FinalError(`redirected to a ${next.protocol} URL`);
      if (url.protocol === 'https:' && next.protocol === 'http:') throw new FinalError(`redirected from https to plain http (${redactUrl(next)})`);
      this.stats.redirectsFollowed++;
      url = next;
    }
  }

  private async dispatch(request: HttpRequest): Promise<HttpResponse> {
    this.stats.requests++;
    try {
      return await this.o.transport(request);
    } catch (err) {
      throw new RetryableError(`${request.method} ${redactUrl(request.url)}: ${describeCause(err)}`);
    }
  }

  private prepare(url: URL, method: 'GET' | 'HEAD', extra: Record<string, string>): HttpRequest {
    if (url.origin !== this.o.url.origin) return { url, method, headers: extra };
    const request: HttpRequest = { url, method, headers: { ...this.o.headers, ...extra } };
    return this.o.sign ? this.o.sign(request) : request;
  }
}
