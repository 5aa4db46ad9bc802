/**
 * A real nginx (Debian nginx-light) as the HTTP origin of remote-base tests, with its own
 * configuration in a temp dir (no system config, its own pid file and logs, `daemon off;` so
 * the pid we spawn is the master's), on 127.0.0.1. It serves `root` on:
 * - `port`: plain HTTP/1.1 with keep-alive; `/r/PATH` answers 302 to `/PATH`; `/x/PATH`
 *   answers 302 to the same PATH on `otherPort` (another origin);
 * - `otherPort`: plain HTTP, a second origin;
 * - `tlsPort` (when TLS material is given): HTTPS.
 * The access log records method, URI, status, bytes sent, Range, If-Match, Authorization and
 * the connection of each request, so tests can count requests and see which headers reached the origin.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import fs from 'node:fs/promises';
import path from 'node:path';
import { requireTool } from '../../helpers/require-tool.js';
import { freePort, waitForPort } from './free-port.js';

export interface NginxOptions {
  dir: string;
  root: string;
  tls?: { cert: string; key: string };
}

export interface AccessEntry {
  method: string;
  uri: string;
  status: number;
  bytes: number;
  range: string;
  ifMatch: string;
  authorization: string;
  port: number;
  /** nginx's connection serial number: requests sharing one came over one kept-alive connection. */
  connection: number;
}

export interface Nginx {
  pid: number;
  port: number;
  otherPort: number;
  tlsPort: number | null;
  url(file: string): string;
  tlsUrl(file: string): string;
  /** Every request that ended before this call (settled with a marker request, left out here). */
  accessLog(): Promise<AccessEntry[]>;
  stop(): Promise<void>;
}

function config(o: NginxOptions, ports: { port: number; otherPort: number; tlsPort: number | null }): string {
  const d = o.dir;
  const tls = o.tls && ports.tlsPort !== null
    ? `server { listen 127.0.0.1:${ports.tlsPort} ssl; ssl_certificate ${o.tls.cert}; ssl_certificate_key ${o.tls.key}; root ${o.root}; }`
    : '';
  // As root, nginx would run its worker as nobody, who cannot read a private temp dir.
  const user = process.getuid?.() === 0 ? 'user root;\n' : '';
  return `${user}daemon off;
master_process on;
worker_processes 1;
pid ${d}/nginx.pid;
error_log ${d}/error.log warn;
events { worker_connections 512; }
http {
  default_type application/octet-stream;
  log_format t escape=none '$request_method\\t$uri\\t$status\\t$bytes_sent\\t$http_range\\t$http_if_match\\t$http_authorization\\t$server_port\\t$connection';
  access_log ${d}/access.log t;
  client_body_temp_path ${d}/tmp/body;
  proxy_temp_path ${d}/tmp/proxy;
  fastcgi_temp_path ${d}/tmp/fastcgi;
  uwsgi_temp_path ${d}/tmp/uwsgi;
  scgi_temp_path ${d}/tmp/scgi;
  keepalive_requests 100000;
  keepalive_timeout 60s;
  server {
    listen 127.0.0.1:${ports.port};
    root ${o.root};
    location /r/ { rewrite ^/r/(.*)$ /$1 redirect; }
    location /x/ { rewrite ^/x/(.*)$ http://127.0.0.1:${ports.otherPort}/$1 redirect; }
  }
  server { listen 127.0.0.1:${ports.otherPort}; root ${o.root}; }
  ${tls}
}
`;
}

/** The URI prefix of settling requests; their lines are left out of accessLog(). */
const MARK_PREFIX = '/.stackbd-log-mark-';

/**
 * nginx writes a request's log line when it finishes the request, which can be just after the
 * client has read the last byte: a test reading the log right after its read may miss that
 * line (seen as a block fetched "later" than the read that fetched it). nginx runs one worker
 * here, which handles events in order, so a request sent after the client got its bytes is
 * logged after every request that ended before it: send one and wait for its own line.
 */
async function settleLog(port: number, mark: string, logFile: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: mark, agent: false }, (res) => {
      res.resume();
      res.once('end', () => resolve());
      res.once('error', reject);
    });
    req.once('error', reject);
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const text = await fs.readFile(logFile, 'utf8').catch(() => '');
    if (text.includes(`\t${mark}\t`)) return;
    if (Date.now() > deadline) throw new Error(`nginx did not log the request ${mark} within 10 s`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function parseLog(text: string): AccessEntry[] {
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const [method, uri, status, bytes, range, ifMatch, authorization, port, connection] = l.split('\t');
      const dash = (s: string): string => (s === '-' ? '' : s);
      return { method, uri, status: Number(status), bytes: Number(bytes), range: dash(range), ifMatch: dash(ifMatch), authorization: dash(authorization), port: Number(port), connection: Number(connection) };
    })
    .filter((e) => !e.uri.startsWith(MARK_PREFIX));
}

export async function startNginx(o: NginxOptions): Promise<Nginx> {
  requireTool('nginx');
  await fs.mkdir(path.join(o.dir, 'tmp'), { recursive: true });
  // The ports are picked free just before nginx binds them; another program could take one in
  // between, so a failed start is tried again with new ports.
  for (let attempt = 0; ; attempt++) {
    const ports = { port: await freePort(), otherPort: await freePort(), tlsPort: o.tls ? await freePort() : null };
    const conf = path.join(o.dir, 'nginx.conf');
    await fs.writeFile(conf, config(o, ports));
    const child: ChildProcess = spawn('nginx', ['-p', o.dir, '-c', conf, '-e', path.join(o.dir, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      for (const p of [ports.port, ports.otherPort, ports.tlsPort]) if (p !== null) await waitForPort(p, 10_000, () => child.exitCode === null && child.signalCode === null);
    } catch (err) {
      if (child.exitCode === null) child.kill('SIGKILL');
      await exited;
      const log = await fs.readFile(path.join(o.dir, 'error.log'), 'utf8').catch(() => '');
      if (attempt < 3 && /Address already in use/.test(stderr + log)) continue;
      throw new Error(`nginx did not start: ${String(err)}\n${stderr}\n${log}`);
    }
    const pid = child.pid!;
    let marks = 0;
    return {
      pid,
      ...ports,
      url: (file) => `http://127.0.0.1:${ports.port}/${file}`,
      tlsUrl: (file) => `https://localhost:${ports.tlsPort}/${file}`,
      accessLog: async () => {
        const logFile = path.join(o.dir, 'access.log');
        const mark = `${MARK_PREFIX}${++marks}`;
        // A marker request settles the log first (see settleLog); a stopped nginx has nothing to settle.
        const alive = child.exitCode === null && child.signalCode === null;
        if (alive) await settleLog(ports.port, mark, logFile);
        return parseLog(await fs.readFile(logFile, 'utf8').catch(() => ''));
      },
      stop: async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        // SIGTERM is nginx's fast shutdown; the master stops its worker before exiting.
        process.kill(pid, 'SIGTERM');
        const timer = setTimeout(() => process.kill(pid, 'SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      },
    };
  }
}
