/**
 * A real OpenStack Swift with the s3api middleware on loopback, for s3:// tests that need real
 * Signature V4 checking: account, container and object servers and a proxy (tempauth, s3api),
 * one replica, all in a temp dir, each started by this helper by its own pid and stopped by it.
 *
 * Facts it relies on (Debian bookworm, swift 2.30): rings are built with swift's RingBuilder in
 * one Python process (much faster than four swift-ring-builder runs); `workers = 0` keeps each
 * server in one process, so its pid is all there is to stop; the object server needs user
 * xattrs on its device directory (ext4 and tmpfs have them); swift always reads
 * /etc/swift/swift.conf for the hash prefix and suffix: Debian's swift package installs one,
 * and this helper writes one only if it is missing (it never changes an existing one).
 * Tempauth wants the `cache` middleware; with no memcached running its lookups miss, which
 * S3 requests (authenticated by signature on every request) do not need.
 * The S3 credentials are tempauth's user: access key "test:tester", secret "testing".
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import aws4 from 'aws4';
import { request } from 'undici';
import { freePort, waitForPort } from './free-port.js';

const run = promisify(execFile);
const SWIFT_PACKAGES = 'swift swift-proxy swift-object swift-container swift-account';
const SWIFT_CONF = '/etc/swift/swift.conf';

export const SWIFT_ACCESS_KEY = 'test:tester';
export const SWIFT_SECRET_KEY = 'testing';
export const SWIFT_REGION = 'us-east-1';

export interface Swift {
  endpoint: string;
  pids: number[];
  /** Sends a SigV4-signed S3 request (for setting up buckets and objects). */
  s3(method: string, pathname: string, body?: Buffer, headers?: Record<string, string>): Promise<{ status: number; body: string; headers: Record<string, string> }>;
  /** A presigned GET URL, valid for `seconds`. */
  presign(pathname: string, seconds: number): string;
  stop(): Promise<void>;
}

const SERVERS = ['account', 'container', 'object'] as const;

async function requireSwift(): Promise<void> {
  try {
    await fs.access('/usr/bin/swift-proxy-server');
    await run('/usr/bin/python3', ['-c', 'import swift.common.ring'], { timeout: 30_000 });
  } catch {
    throw new Error(`swift is not installed: run "apt-get install -y --no-install-recommends ${SWIFT_PACKAGES}"`);
  }
  try {
    await fs.access(SWIFT_CONF);
  } catch {
    await fs.mkdir(path.dirname(SWIFT_CONF), { recursive: true });
    await fs.writeFile(SWIFT_CONF, '[swift-hash]\nswift_hash_path_suffix = stackbd-test\nswift_hash_path_prefix = stackbd-test\n\n[storage-policy:0]\nname = Policy-0\ndefault = yes\n');
  }
}

/** What every server's [DEFAULT] says: loopback, one process, our user, our rings. */
function defaults(dir: string, port: number, user: string): string {
  return `[DEFAULT]
bind_ip = 127.0.0.1
bind_port = ${port}
workers = 0
user = ${user}
swift_dir = ${dir}/etc
log_level = WARNING
`;
}

function serverConf(kind: string, dir: string, port: number, user: string): string {
  return `${defaults(dir, port, user)}devices = ${dir}/srv
mount_check = false

[pipeline:main]
pipeline = ${kind}-server

[app:${kind}-server]
use = egg:swift#${kind}

[${kind}-replicator]
[${kind}-auditor]
${kind === 'container' ? '[container-updater]\n[container-sync]\n' : ''}${kind === 'object' ? '[object-updater]\n[object-reconstructor]\n' : ''}`;
}

function proxyConf(dir: string, port: number, user: string): string {
  return `${defaults(dir, port, user)}
[pipeline:main]
pipeline = catch_errors gatekeeper proxy-logging cache listing_formats s3api tempauth copy proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:1

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:s3api]
use = egg:swift#s3api
location = ${SWIFT_REGION}

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = ${SWIFT_SECRET_KEY} .admin

[filter:copy]
use = egg:swift#copy
`;
}

const RING_SCRIPT = `
import sys
from swift.common.ring import RingBuilder
etc = sys.argv[1]
for name, port in zip(('account', 'container', 'object'), sys.argv[2:5]):
    b = RingBuilder(6, 1, 1)
    b.add_dev({'id': 0, 'region': 1, 'zone': 1, 'ip': '127.0.0.1', 'port': int(port), 'device': 'sdb1', 'weight': 100, 'meta': ''})
    b.rebalance()
    b.save('%s/%s.builder' % (etc, name))
    b.get_ring().save('%s/%s.ring.gz' % (etc, name))
`;

export async function startSwift(dir: string): Promise<Swift> {
  await requireSwift();
  const etc = path.join(dir, 'etc');
  await fs.mkdir(path.join(dir, 'srv', 'sdb1'), { recursive: true });
  await fs.mkdir(etc, { recursive: true });
  const user = os.userInfo().username;
  const ports = { account: await freePort(), container: await freePort(), object: await freePort(), proxy: await freePort() };
  await run('/usr/bin/python3', ['-c', RING_SCRIPT, etc, String(ports.account), String(ports.container), String(ports.object)], { timeout: 60_000 });
  for (const kind of SERVERS) await fs.writeFile(path.join(etc, `${kind}-server.conf`), serverConf(kind, dir, ports[kind], user));
  await fs.writeFile(path.join(etc, 'proxy-server.conf'), proxyConf(dir, ports.proxy, user));

  const children: ChildProcess[] = [];
  const output: string[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(
      children.map(async (child) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        process.kill(child.pid!, 'SIGTERM');
        const timer = setTimeout(() => {
          if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
        }, 10_000);
        await exited;
        clearTimeout(timer);
      }),
    );
  };
  try {
    for (const kind of [...SERVERS, 'proxy'] as const) {
      const child = spawn(`/usr/bin/swift-${kind}-server`, [path.join(etc, `${kind}-server.conf`)], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout!.on('data', (d: Buffer) => output.push(`${kind}: ${d.toString()}`));
      child.stderr!.on('data', (d: Buffer) => output.push(`${kind}: ${d.toString()}`));
      children.push(child);
    }
    await Promise.all(
      (['account', 'container', 'object', 'proxy'] as const).map((kind, i) =>
        waitForPort(ports[kind], 60_000, () => children[i].exitCode === null && children[i].signalCode === null),
      ),
    );
  } catch (err) {
    await stop();
    throw new Error(`swift did not start: ${String(err)}\n${output.join('')}`);
  }

  const endpoint = `http://127.0.0.1:${ports.proxy}`;
  const credentials = { accessKeyId: SWIFT_ACCESS_KEY, secretAccessKey: SWIFT_SECRET_KEY };
  return {
    endpoint,
    pids: children.map((c) => c.pid!),
    s3: async (method, pathname, body, headers = {}) => {
      const signed = aws4.sign({ host: `127.0.0.1:${ports.proxy}`, path: pathname, method, service: 's3', region: SWIFT_REGION, headers: { ...headers }, ...(body ? { body } : {}) }, credentials);
      const res = await request(`${endpoint}${pathname}`, { method: method as 'GET', headers: signed.headers as Record<string, string>, ...(body ? { body } : {}) });
      const text = await res.body.text();
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries(res.headers)) out[k] = Array.isArray(v) ? v.join(', ') : String(v);
      return { status: res.statusCode, body: text, headers: out };
    },
    presign: (pathname, seconds) => {
      const signed = aws4.sign(
        { host: `127.0.0.1:${ports.proxy}`, path: `${pathname}?X-Amz-Expires=${seconds}`, method: 'GET', service: 's3', region: SWIFT_REGION, signQuery: true },
        credentials,
      );
      return `${endpoint}${signed.path}`;
    },
    stop,
  };
}
