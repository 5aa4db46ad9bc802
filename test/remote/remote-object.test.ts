/**
 * The request logic of a remote object over a scripted transport: redirects resolved once and
 * re-resolved when the remembered target fails, credentials kept to their origin, integrity
 * checks of every response, and error messages.
 */
import { describe, expect, it } from 'vitest';
import { RemoteObject } from '../../src/remote/remote-object.js';
import type { Clock } from '../../src/remote/retry.js';
import type { HttpRequest, HttpResponse, Transport } from '../../src/remote/transport.js';

const clock: Clock = { now: () => 0, random: () => 0, sleep: async () => undefined };
const content = Buffer.from(Array.from({ length: 10_000 }, (_, i) => i % 251));
const ETAG = '"v1"';

interface Reply {
  status: number;
  headers?: Record<string, string>;
  body?: Buffer | string;
}

function response(reply: Reply): HttpResponse {
  const body = typeof reply.body === 'string' ? Buffer.from(reply.body) : (reply.body ?? Buffer.alloc(0));
  return {
    status: reply.status,
    headers: reply.headers ?? {},
    readExactly: async (into) => {
      if (body.length !== into.length) throw new Error(`body of ${body.length} bytes`);
      body.copy(into);
    },
    text: async (limit) => body.subarray(0, limit).toString(),
    discard: () => undefined,
  };
}

/** An origin serving `content` with ETag v1 and ranges, honouring If-Match. */
function serveObject(req: HttpRequest, etag = ETAG): Reply {
  if (req.method === 'HEAD') return { status: 200, headers: { 'content-length': String(content.length), etag } };
  const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.Range ?? '');
  if (!m) return { status: 200, body: content };
  if (req.headers['If-Match'] && req.headers['If-Match'] !== etag) return { status: 412 };
  const [start, end] = [Number(m[1]), Number(m[2])];
  return { status: 206, headers: { 'content-range': `bytes ${start}-${end}/${content.length}`, etag }, body: content.subarray(start, end + 1) };
}

function scripted(route: (req: HttpRequest) => Reply): { transport: Transport; log: HttpRequest[] } {
  const log: HttpRequest[] = [];
  return {
    log,
    transport: async (req) => {
      log.push(req);
      return response(route(req));
    },
  };
}

function object(transport: Transport, extra: Partial<ConstructorParameters<typeof RemoteObject>[0]> = {}): RemoteObject {
  return new RemoteObject({
    url: new URL('https://origin.test/img.raw'),
    display: 'https://origin.test/img.raw',
    transport,
    headers: {},
    retries: 3,
    maxRedirects: 5,
    clock,
    onWarning: () => undefined,
    ...extra,
  });
}

describe('RemoteObject redirects', () => {
  it('follows a redirect chain once and sends later requests straight to where it ended', async () => {
    const s = scripted((req) => {
      if (req.url.href === 'https://origin.test/img.raw') return { status: 302, headers: { location: '/v/img.raw' } };
      if (req.url.href === 'https://origin.test/v/img.raw') return { status: 307, headers: { location: 'https://cdn.test/img.raw?sig=1' } };
      return serveObject(req);
    });
    const o = object(s.transport);
    expect((await o.probe()).size).toBe(content.length);
    for (let i = 0; i < 5; i++) expect((await o.readRange(i * 1000, 100)).equals(content.subarray(i * 1000, i * 1000 + 100))).toBe(true);
    const hits = (href: string): number => s.log.filter((r) => r.url.href === href).length;
    expect(hits('https://origin.test/img.raw')).toBe(1);
    expect(hits('https://origin.test/v/img.raw')).toBe(1);
    expect(hits('https://cdn.test/img.raw?sig=1')).toBe(7); // HEAD, the probe's GET, five reads
  });

  it('follows the chain again, once, when the remembered target starts failing (an expired presigned URL)', async () => {
    let signature = 1;
    const s = scripted((req) => {
      if (req.url.hostname === 'origin.test') return { status: 302, headers: { location: `https://cdn.test/img.raw?sig=${signature}` } };
      if (req.url.searchParams.get('sig') !== String(signature)) return { status: 403, body: '<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>' };
      return serveObject(req);
    });
    const o = object(s.transport);
    await o.probe();
    await o.readRange(0, 10);
    signature = 2;
    expect((await o.readRange(500, 10)).equals(content.subarray(500, 510))).toBe(true);
    expect(s.log.slice(-3).map((r) => r.url.href)).toEqual(['https://cdn.test/img.raw?sig=1', 'https://origin.test/img.raw', 'https://cdn.test/img.raw?sig=2']);
    await o.readRange(600, 10);
    expect(s.log[s.log.length - 1].url.href).toBe('https://cdn.test/img.raw?sig=2');
  });

  it('stops after the redirect limit and refuses https to http', async () => {
    const loop = scripted((req) => ({ status: 302, headers: { location: `/hop${req.url.pathname.length}` } }));
    await expect(object(loop.transport).probe()).rejects.toThrow('https://origin.test/img.raw: more than 5 redirects');
    const down = scripted(() => ({ status: 301, headers: { location: 'http://plain.test/img.raw' } }));
    await expect(object(down.transport).probe()).rejects.toThrow(/from https to plain http/);
  });

  it('sends the origin its headers and signature, and another origin neither', async () => {
    const s = scripted((req) => (req.url.hostname === 'origin.test' ? { status: 302, headers: { location: 'https://cdn.test/img.raw' } } : serveObject(req)));
    const signed: string[] = [];
    const o = object(s.transport, {
      headers: { Authorization: 'Bearer t', 'X-Key': 'k' },
      sign: (req) => {
        signed.push(req.url.hostname);
        return { ...req, headers: { ...req.headers, 'X-Amz-Signature-Test': 'sig' } };
      },
    });
    await o.probe();
    await o.readRange(0, 10);
    for (const req of s.log) {
      const names = Object.keys(req.headers);
      if (req.url.hostname === 'origin.test') expect(names).toEqual(expect.arrayContaining(['Authorization', 'X-Key', 'X-Amz-Signature-Test']));
      else expect(names.filter((n) => !['Range', 'If-Match', 'If-Unmodified-Since'].includes(n))).toEqual([]);
    }
    expect(new Set(signed)).toEqual(new Set(['origin.test']));
  });
});

describe('RemoteObject integrity checks', () => {
  it('pins with If-Match, or If-Unmodified-Since without a strong ETag', async () => {
    const s = scripted((req) => serveObject(req));
    const o = object(s.transport);
    await o.probe();
    await o.readRange(0, 10);
    expect(s.log[s.log.length - 1].headers['If-Match']).toBe(ETAG);
    const weak = scripted((req) => {
      const reply = serveObject(req, 'W/"weak"');
      reply.headers = { ...reply.headers, 'last-modified': 'Mon, 01 Jan 2024 00:00:00 GMT' };
      return reply;
    });
    const w = object(weak.transport);
    expect(await w.probe()).toEqual({ size: content.length, etag: null, lastModified: 'Mon, 01 Jan 2024 00:00:00 GMT' });
    await w.readRange(0, 10);
    expect(weak.log[weak.log.length - 1].headers).toMatchObject({ 'If-Unmodified-Since': 'Mon, 01 Jan 2024 00:00:00 GMT' });
    expect(weak.log[weak.log.length - 1].headers['If-Match']).toBeUndefined();
  });

  it('treats another ETag or another total size in a 206 as a changed base (a server that ignores If-Match)', async () => {
    let etag = ETAG;
    const s = scripted((req) => serveObject({ ...req, headers: { ...req.headers, 'If-Match': '' } }, etag));
    const warnings: string[] = [];
    const o = object(s.transport, { onWarning: (m) => warnings.push(m) });
    await o.probe();
    etag = '"v2"';
    await expect(o.readRange(0, 10)).rejects.toMatchObject({ errno: 'EIO', message: expect.stringMatching(/changed under the stack \(its ETag is now "v2"/) });
    await expect(o.readRange(20, 10)).rejects.toMatchObject({ errno: 'EIO' });
    expect(warnings).toHaveLength(1);
    const sized = scripted((req) => {
      const reply = serveObject(req);
      if (reply.status === 206 && req.headers.Range !== 'bytes=0-0') reply.headers = { ...reply.headers, 'content-range': reply.headers!['content-range'].replace(/\/\d+$/, '/20000') };
      return reply;
    });
    const so = object(sized.transport);
    await so.probe();
    await expect(so.readRange(0, 10)).rejects.toThrow(/its size is now 20000 bytes, not 10000/);
  });

  it('names the S3 error code from an XML body when the object cannot be opened', async () => {
    const s = scripted((req) =>
      req.method === 'HEAD' ? { status: 403 } : { status: 403, body: '<?xml version="1.0"?><Error><Code>SignatureDoesNotMatch</Code><Message>The signature is wrong</Message></Error>' },
    );
    await expect(object(s.transport).probe()).rejects.toThrow('https://origin.test/img.raw: GET was refused: HTTP 403 (SignatureDoesNotMatch: The signature is wrong)');
  });

  it('tries connection errors again and reports them by the URL when they persist', async () => {
    let failures = 2;
    const flaky: Transport = async (req) => {
      if (failures-- > 0) throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' });
      return response(serveObject(req));
    };
    expect((await object(flaky).probe()).etag).toBe(ETAG);
    const dead: Transport = async () => {
      throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' });
    };
    await expect(object(dead).probe()).rejects.toThrow('https://origin.test/img.raw: cannot be reached: HEAD https://origin.test/img.raw: connect ECONNREFUSED 127.0.0.1:9');
  });
});
