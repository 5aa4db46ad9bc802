/**
 * The admin API and `stackbd ctl` against the real CLI: list, add, remove (drains first), live
 * snapshot under load (no write lost or reordered), health, Prometheus metrics scraped during a
 * run, and the bearer token on TCP.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminRequest } from '../../src/cli/admin-client.js';
import { NbdClient } from '../../src/nbd/client.js';
import { DiskImage } from '../../src/stack/disk-image.js';
import { runStackbd } from '../helpers/run-command.js';
import { spawnServer } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const SIZE = 32 * MiB;

describe('admin API', () => {
  let dir: string;
  let base: string;
  let overlay: string;

  beforeAll(async () => {
    dir = await makeTempDir();
    base = path.join(dir, 'base.raw');
    overlay = path.join(dir, 'o1.asif');
    await fs.writeFile(base, randomBytes(SIZE));
    expect((await runStackbd(['append', base, '--new', overlay])).code).toBe(0);
  });
  afterAll(() => removeDir(dir));

  it('lists, adds, removes, snapshots live, and serves metrics over a unix socket', async () => {
    const socket = path.join(dir, 'admin.sock');
    const server = await spawnServer({ args: ['--export', `vm=${base},${overlay}`, '--admin-socket', socket] });
    const target = { socketPath: socket };
    try {
      await server.waitForLog('"admin API listening"');
      expect((await fs.stat(socket)).mode & 0o777).toBe(0o600);
      const health = JSON.parse((await adminRequest(target, 'GET', '/health')).body) as { status: string; exports: number };
      expect(health).toMatchObject({ status: 'ok', exports: 1 });

      // Writes keep flowing while a snapshot is taken; none is lost or lands out of order.
      const client = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'vm' });
      const model = await fs.readFile(base);
      let stop = false;
      let round = 0;
      const writer = (async () => {
        while (!stop) {
          const data = Buffer.alloc(64 * 1024, round % 251);
          const offset = (round % 64) * 256 * 1024;
          data.copy(model, offset);
          // Two overlapping writes in flight at once: the later must win.
          const second = Buffer.alloc(4096, (round + 7) % 251);
          second.copy(model, offset);
          await Promise.all([client.pwrite(data, offset), client.pwrite(second, offset)]);
          round++;
        }
      })();
      await new Promise((r) => setTimeout(r, 200));
      const snap = path.join(dir, 's2.asif');
      const snapshot = await runStackbd(['ctl', 'snapshot', 'vm', '--new', snap, '--socket', socket]);
      expect(snapshot.code, snapshot.stderr).toBe(0);
      const after = JSON.parse(snapshot.stdout) as { layers: Array<{ path: string; parentUUID: string | null; layerUUID: string }> };
      expect(after.layers.map((l) => l.path)).toEqual([base, overlay, snap]);
      expect(after.layers[2].parentUUID).toBe(after.layers[1].layerUUID);
      await new Promise((r) => setTimeout(r, 200));
      stop = true;
      await writer;
      expect(round).toBeGreaterThan(5);
      expect((await client.pread(0, SIZE)).equals(model)).toBe(true);

      const metrics = await runStackbd(['ctl', 'metrics', '--socket', socket]);
      expect(metrics.stdout).toMatch(/stackbd_requests_total\{export="vm",op="write"\} (\d+)/);
      const writes = Number(/stackbd_requests_total\{export="vm",op="write"\} (\d+)/.exec(metrics.stdout)![1]);
      expect(writes).toBe(round * 2);
      expect(metrics.stdout).toMatch(/stackbd_request_duration_seconds_bucket\{le="[^"]+",export="vm",op="write"\} \d+/);
      expect(metrics.stdout).toContain('stackbd_connections{export="vm"} 1');
      // Every write was answered and the client is idle: nothing in flight, every connection reading.
      expect(metrics.stdout).toMatch(/^stackbd_requests_in_flight 0$/m);
      expect(metrics.stdout).toMatch(/^stackbd_connections_not_reading 0$/m);
      expect(metrics.stdout).toContain('stackbd_process_resident_memory_bytes');
      await client.disconnect();

      // Add an export, use it, remove it while a client is connected: the client is drained.
      const added = await runStackbd(['ctl', 'add', `ro=${base}`, '--read-only', '--socket', socket]);
      expect(added.code, added.stderr).toBe(0);
      const dup = await runStackbd(['ctl', 'add', `ro=${base}`, '--socket', socket]);
      expect(dup.code).toBe(1);
      expect(dup.stderr).toContain('409');
      const reader = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'ro' });
      expect(reader.flags & 2).toBe(2);
      const removed = await runStackbd(['ctl', 'remove', 'ro', '--socket', socket]);
      expect(removed.code, removed.stderr).toBe(0);
      await reader.closed;
      await expect(NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'ro' })).rejects.toThrow();
      const list = JSON.parse((await runStackbd(['ctl', 'list', '--socket', socket])).stdout) as Array<{ name: string }>;
      expect(list.map((e) => e.name)).toEqual(['vm']);
      const bad = await adminRequest(target, 'POST', '/exports', { name: 'x', layers: [path.join(dir, 'missing.raw')] });
      expect(bad.status).toBe(400);
      expect(bad.body).toContain('missing.raw');
    } finally {
      expect(await server.stop()).toBe(0);
    }
    // The snapshot chain is valid on disk, and reads the same as the model did.
    const image = await DiskImage.open([base, overlay, path.join(dir, 's2.asif')]);
    expect(image.layers.map((l) => l.layerType)).toEqual([null, 'overlay', 'overlay']);
    await image.close();
  });

  it('requires the bearer token over TCP and refuses non-loopback addresses', async () => {
    const tokenFile = path.join(dir, 'token');
    await fs.writeFile(tokenFile, randomBytes(24).toString('hex'));
    const server = await spawnServer({ args: ['--export', `vm=${base}`, '--read-only', '--admin-listen', '127.0.0.1:0', '--admin-token-file', tokenFile] });
    try {
      const line = await server.waitForLog('"adminTcp"');
      const { port } = (JSON.parse(line) as { adminTcp: { port: number } }).adminTcp;
      const url = `http://127.0.0.1:${port}`;
      expect((await adminRequest({ url }, 'GET', '/health')).status).toBe(401);
      expect((await adminRequest({ url, token: 'wrong-token-wrong-token' }, 'GET', '/exports')).status).toBe(401);
      const ok = await runStackbd(['ctl', 'health', '--url', url, '--token-file', tokenFile]);
      expect(ok.code, ok.stderr).toBe(0);
    } finally {
      await server.stop();
    }
    const open = await runStackbd(['serve', '--export', base, '--listen', '127.0.0.1:0', '--admin-listen', '0.0.0.0:0', '--admin-token-file', tokenFile]);
    expect(open.code).toBe(2);
    expect(open.stderr).toContain('loopback');
  });

  it('serves on --admin-socket and --admin-listen at once, and answers bad requests with 4xx', async () => {
    const tokenFile = path.join(dir, 'token-both');
    const token = randomBytes(24).toString('hex');
    await fs.writeFile(tokenFile, token);
    const socket = path.join(dir, 'admin-both.sock');
    const server = await spawnServer({
      args: ['--export', `vm=${base}`, '--read-only', '--admin-socket', socket, '--admin-listen', '127.0.0.1:0', '--admin-token-file', tokenFile],
    });
    try {
      const line = await server.waitForLog('"adminTcp"');
      const { port } = (JSON.parse(line) as { adminTcp: { port: number } }).adminTcp;
      const tcp = { url: `http://127.0.0.1:${port}`, token };
      const unix = { socketPath: socket, token };
      for (const target of [tcp, unix]) {
        const health = await adminRequest(target, 'GET', '/health');
        expect(health.status, health.body).toBe(200);
        expect(JSON.parse(health.body)).toMatchObject({ status: 'ok', exports: 1 });
        expect((await adminRequest({ ...target, token: undefined }, 'GET', '/health')).status).toBe(401);
      }
      const unknown = await adminRequest(unix, 'GET', '/nowhere');
      expect(unknown.status).toBe(404);
      expect(JSON.parse(unknown.body)).toHaveProperty('error');
      const wrongMethod = await rawRequest(socket, token, 'PUT', '/exports', '');
      expect(wrongMethod.status).toBe(405);
      expect(wrongMethod.headers.allow).toBe('GET, POST');
      const badJson = await rawRequest(socket, token, 'POST', '/exports', '{"name": ', 'application/json');
      expect(badJson.status).toBe(400);
      expect(badJson.body).toContain('not valid JSON');
      const notJson = await rawRequest(socket, token, 'POST', '/exports', 'name=x', 'application/x-www-form-urlencoded');
      expect(notJson.status).toBe(415);
      const huge = await rawRequest(socket, token, 'POST', '/exports', JSON.stringify({ name: 'x', layers: ['a'.repeat(70 * 1024)] }), 'application/json');
      expect(huge.status).toBe(413);
      const one = await adminRequest(tcp, 'GET', '/exports/vm');
      expect(JSON.parse(one.body)).toMatchObject({ name: 'vm', readOnly: true });
      expect((await adminRequest(tcp, 'GET', '/exports/nope')).status).toBe(404);
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });
});

/** One request with a body sent as is (adminRequest always sends JSON). */
function rawRequest(socketPath: string, token: string, method: string, urlPath: string, body: string, contentType?: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { socketPath, method, path: urlPath, headers: { authorization: `Bearer ${token}`, ...(contentType ? { 'content-type': contentType } : {}) } },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      },
    );
    // The server may answer (413) and close before it has read the whole body.
    req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'EPIPE' || err.code === 'ECONNRESET' ? undefined : reject(err)));
    req.end(body);
  });
}
