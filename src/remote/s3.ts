/**
 * s3://bucket/key: where the object is (the URL the HTTP machinery reads) and how each request
 * to it is signed (Signature V4 with the aws4 package, a fresh signature per attempt so retries
 * never carry a stale date). Custom endpoints (S3-compatible stores, IP addresses) use
 * path-style URLs; AWS uses virtual-hosted ones unless the bucket name does not fit a host name.
 */
import aws4 from 'aws4';
import type { AwsCredentials, AwsSettings } from './aws-config.js';
import type { S3Addressing } from './options.js';
import type { HttpRequest } from './transport.js';

export interface S3Location {
  bucket: string;
  key: string;
}

export class S3UrlError extends Error {
  override name = 'S3UrlError';
}

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$|^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$/;

export function parseS3Url(spec: string): S3Location {
  const m = /^s3:\/\/([^/?#]+)\/(.+)$/.exec(spec);
  if (!m) throw new S3UrlError(`${spec}: expected s3://BUCKET/KEY`);
  if (!BUCKET.test(m[1])) throw new S3UrlError(`${spec}: "${m[1]}" is not a valid bucket name`);
  return { bucket: m[1], key: m[2] };
}

/** Percent-encoding as SigV4 canonicalises it (RFC 3986 unreserved kept, "/" kept between segments). */
function encodeKey(key: string): string {
  return key
    .split('/')
    .map((segment) => encodeURIComponent(segment).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`))
    .join('/');
}

function hostable(bucket: string): boolean {
  return /^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/.test(bucket);
}

export function s3ObjectUrl(loc: S3Location, settings: Pick<AwsSettings, 'endpoint' | 'region'>, addressing: S3Addressing): URL {
  const endpoint = new URL(settings.endpoint ?? `https://s3.${settings.region}.amazonaws.com`);
  if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') throw new S3UrlError(`S3 endpoint ${endpoint.href}: expected an http:// or https:// URL`);
  const virtual = addressing === 'virtual' || (addressing === 'auto' && settings.endpoint === null && hostable(loc.bucket));
  const base = endpoint.pathname.replace(/\/+$/, '');
  if (virtual) return new URL(`${endpoint.protocol}//${loc.bucket}.${endpoint.host}${base}/${encodeKey(loc.key)}`);
  return new URL(`${endpoint.protocol}//${endpoint.host}${base}/${encodeURIComponent(loc.bucket)}/${encodeKey(loc.key)}`);
}

export function s3Signer(credentials: AwsCredentials, region: string): (request: HttpRequest) => HttpRequest {
  return (request) => {
    const signed = aws4.sign(
      {
        host: request.url.host,
        path: `${request.url.pathname}${request.url.search}`,
        method: request.method,
        service: 's3',
        region,
        headers: { ...request.headers },
      },
      {
        accessKeyId: credentials.accessKeyId,
        secretAccessKey: credentials.secretAccessKey,
        ...(credentials.sessionToken ? { sessionToken: credentials.sessionToken } : {}),
      },
    );
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(signed.headers ?? {})) if (value !== undefined) headers[name] = String(value);
    return { ...request, headers };
  };
}
