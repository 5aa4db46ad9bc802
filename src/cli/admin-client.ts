/** A small HTTP client for the admin API, over a unix socket or loopback TCP (node:http). */
import http from 'node:http';

export interface AdminTarget {
  socketPath?: string;
  url?: string;
  token?: string;
}

export interface AdminResponse {
  status: number;
  body: string;
}

export function adminRequest(target: AdminTarget, method: string, path: string, body?: unknown): Promise<AdminResponse> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const base = target.url ? new URL(target.url) : null;
  const options: http.RequestOptions = {
    method,
    path,
    headers: {
      ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
      ...(target.token ? { authorization: `Bearer ${target.token}` } : {}),
    },
    ...(target.socketPath ? { socketPath: target.socketPath } : { host: base?.hostname.replace(/^\[(.*)\]$/, '$1'), port: base?.port }),
  };
  return new Promise((resolve, reject) => {
    const req = http.request(options, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}
