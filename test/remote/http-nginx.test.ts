/**
 * Remote HTTP(S) bases against a real nginx on loopback: ranged reads match the file, every GET
 * is pinned with If-Match, concurrent reads of a block share one GET, redirects are resolved
 * once, credentials never cross origins, TLS with a test CA, and a replaced object gives one
 * clear error instead of mixed content.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RequestError } from '../../src/block/errors.js';
import type { Layer } from '../../src/formats/layer.js';
import { openRemote, RemoteSourceError, type RemoteOptions } from '../../src/remote/index.js';
import { makeTlsFixtures, type TlsFixtures } from '../helpers/tls-fixtures.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { readAt } from './helpers/read-at.js';
import { startNginx, type Nginx } from './helpers/nginx.js';

const MiB = 1024 * 1024;
let dir: string;
let root: string;
let nginx: Nginx;
let tls: TlsFixtures;
let content: Buffer;

async function withLayer<T>(url: string, options: RemoteOptions, use: (layer: Layer) => Promise<T>): Promise<T> {
  const layer = await openRemote(url, options);
  try {
    return await use(layer);
  } finally {
    await layer.close();
  }
}


beforeAll(async () => {
  dir = await makeTempDir('stackbd-remote-nginx-');
  root = path.join(dir, 'www');
  await fs.mkdir(root);
  content = randomBytes(3 * MiB + 4096);
  await fs.writeFile(path.join(root, 'base.raw'), content);
  tls = await makeTlsFixtures(path.join(dir, 'tls'));
  nginx = await startNginx({ dir, root, tls: { cert: tls.serverCert, key: tls.serverKey } });
});

afterAll(async () => {
  await nginx?.stop();
  await removeDir(dir);
});

describe('an http:// base served by nginx', () => {
  it('reads any range exactly, each GET a 206 pinned with If-Match, sizes and pin from the server', async () => {
    await withLayer(nginx.url('base.raw'), { blockSize: 64 * 1024 }, async (layer) => {
      expect(layer.size).toBe(content.length);
      expect(layer.format).toBe('http');
      expect(layer.readOnly).toBe(true);
      const pin = (await layer.pin())!;
      expect(Object.keys(pin).sort()).toEqual(['etag', 'size']);
      expect(pin.size).toBe(content.length);
      for (const [offset, length] of [
        [0, 512],
        [65_000, 200_000],
        [content.length - 4096, 4096],
        [1_000_001, 1],
        [2 * MiB - 3, 70_000],
      ]) {
        expect((await readAt(layer, offset, length)).equals(content.subarray(offset, offset + length))).toBe(true);
      }
      expect(await layer.map(0, layer.size)).toEqual([{ offset: 0, length: layer.size, state: 'data' }]);
      await expect(layer.write(Buffer.alloc(512), 0)).rejects.toMatchObject({ errno: 'EPERM' });
    });
    const gets = (await nginx.accessLog()).filter((e) => e.uri === '/base.raw' && e.method === 'GET');
    expect(gets.length).toBeGreaterThan(1);
    for (const e of gets) {
      expect(e.status).toBe(206);
      expect(e.range).toMatch(/^bytes=\d+-\d+$/);
      expect(e.ifMatch).toMatch(/^"[0-9a-f]+-[0-9a-f]+"$/);
    }
  });

  it('serves many concurrent readers of one block with one GET', async () => {
    await fs.writeFile(path.join(root, 'shared.raw'), content);
    await withLayer(nginx.url('shared.raw'), { blockSize: 256 * 1024, readaheadMaxBytes: 0 }, async (layer) => {
      const before = (await nginx.accessLog()).length;
      const reads = Array.from({ length: 20 }, (_, i) => readAt(layer, 1024 * 1024 + i * 4096, 4096));
      const bufs = await Promise.all(reads);
      bufs.forEach((b, i) => expect(b.equals(content.subarray(1024 * 1024 + i * 4096, 1024 * 1024 + (i + 1) * 4096))).toBe(true));
      const after = (await nginx.accessLog()).slice(before).filter((e) => e.uri === '/shared.raw');
      expect(after.map((e) => e.range)).toEqual(['bytes=1048576-1310719']);
    });
  });

  it('keeps at most --remote-connections connections open, and reuses them (keep-alive)', async () => {
    await fs.writeFile(path.join(root, 'pool.raw'), content);
    await withLayer(nginx.url('pool.raw'), { blockSize: 64 * 1024, readaheadMaxBytes: 0, connections: 2 }, async (layer) => {
      const reads = Array.from({ length: 24 }, (_, i) => readAt(layer, i * 128 * 1024, 1000));
      const bufs = await Promise.all(reads);
      bufs.forEach((b, i) => expect(b.equals(content.subarray(i * 128 * 1024, i * 128 * 1024 + 1000))).toBe(true));
    });
    const all = (await nginx.accessLog()).filter((e) => e.uri === '/pool.raw');
    expect(all.length).toBe(26); // HEAD, the 1-byte GET, 24 reads
    // undici keeps a HEAD's connection only if the server says keep-alive outright; the GETs
    // must share at most two connections.
    const gets = all.filter((e) => e.method === 'GET');
    expect(new Set(gets.map((e) => e.connection)).size).toBeLessThanOrEqual(2);
  });

  it('merges the missing blocks of one read into one ranged GET', async () => {
    await fs.writeFile(path.join(root, 'merge.raw'), content);
    await withLayer(nginx.url('merge.raw'), { blockSize: 64 * 1024, readaheadMaxBytes: 0 }, async (layer) => {
      await readAt(layer, 64 * 1024, 4096); // block 1 cached
      const before = (await nginx.accessLog()).length;
      const buf = await readAt(layer, 0, 5 * 64 * 1024);
      expect(buf.equals(content.subarray(0, 5 * 64 * 1024))).toBe(true);
      const ranges = (await nginx.accessLog()).slice(before).filter((e) => e.uri === '/merge.raw').map((e) => e.range);
      expect(ranges.sort()).toEqual(['bytes=0-65535', 'bytes=131072-327679']);
    });
  });

  it('follows a 302 once and reads from where it pointed afterwards', async () => {
    await fs.writeFile(path.join(root, 'moved.raw'), content);
    await withLayer(nginx.url('r/moved.raw'), { blockSize: 64 * 1024, readaheadMaxBytes: 0 }, async (layer) => {
      for (let i = 0; i < 10; i++) {
        const offset = i * 300_000;
        expect((await readAt(layer, offset, 1000)).equals(content.subarray(offset, offset + 1000))).toBe(true);
      }
    });
    const log = await nginx.accessLog();
    expect(log.filter((e) => e.uri === '/r/moved.raw').map((e) => e.status)).toEqual([302]);
    expect(log.filter((e) => e.uri === '/moved.raw' && e.method === 'GET').length).toBeGreaterThanOrEqual(11);
  });

  it('sends the header file and userinfo to the origin only, never across a redirect to another origin', async () => {
    await fs.writeFile(path.join(root, 'far.raw'), content);
    const url = nginx.url('x/far.raw').replace('http://', 'http://alice:secret@');
    await withLayer(url, { headers: { 'X-Token': 'hush' } }, async (layer) => {
      expect(layer.path).toBe(`http://***@127.0.0.1:${nginx.port}/x/far.raw`);
      expect((await readAt(layer, 12_345, 777)).equals(content.subarray(12_345, 12_345 + 777))).toBe(true);
    });
    const log = await nginx.accessLog();
    const atOrigin = log.filter((e) => e.uri === '/x/far.raw');
    const elsewhere = log.filter((e) => e.uri === '/far.raw');
    expect(atOrigin.length).toBeGreaterThan(0);
    expect(atOrigin.every((e) => e.authorization === `Basic ${Buffer.from('alice:secret').toString('base64')}` && e.port === nginx.port)).toBe(true);
    expect(elsewhere.length).toBeGreaterThan(0);
    expect(elsewhere.every((e) => e.authorization === '' && e.port === nginx.otherPort)).toBe(true);
  });

  it('hides the query string (a presigned signature) in the layer path', async () => {
    await withLayer(`${nginx.url('base.raw')}?X-Amz-Signature=deadbeef`, {}, async (layer) => {
      expect(layer.path).toBe(`http://127.0.0.1:${nginx.port}/base.raw?…`);
      expect(layer.path).not.toContain('deadbeef');
    });
  });

  it('refuses a missing object and an empty one with a clear error naming the URL', async () => {
    await expect(openRemote(nginx.url('nothing.raw'), { retries: 0 })).rejects.toThrow(new RegExp(`^http://127.0.0.1:${nginx.port}/nothing.raw: .*HTTP 404`));
    await fs.writeFile(path.join(root, 'empty.raw'), '');
    await expect(openRemote(nginx.url('empty.raw'), { retries: 0 })).rejects.toBeInstanceOf(RemoteSourceError);
    await expect(openRemote(nginx.url('empty.raw'), { retries: 0 })).rejects.toThrow(/empty/);
  });

  it('reads over TLS with a custom CA, and refuses the server without it', async () => {
    await withLayer(nginx.tlsUrl('base.raw'), { caFile: tls.caCert }, async (layer) => {
      expect((await readAt(layer, 100, 5000)).equals(content.subarray(100, 5100))).toBe(true);
    });
    await expect(openRemote(nginx.tlsUrl('base.raw'), { retries: 0 })).rejects.toThrow(/certificate/i);
  });

  it('notices an object replaced under it: one clear error, logged once, never mixed content; a new open pins the new version', async () => {
    const file = path.join(root, 'golden.raw');
    await fs.writeFile(file, content);
    const warnings: string[] = [];
    const layer = await openRemote(nginx.url('golden.raw'), { blockSize: 64 * 1024, readaheadMaxBytes: 0, onWarning: (m) => warnings.push(m) });
    try {
      const oldPin = (await layer.pin())!;
      expect((await readAt(layer, 0, 4096)).equals(content.subarray(0, 4096))).toBe(true);
      // Replace it: new bytes, and a modification time certainly different (nginx's ETag is mtime-size).
      const replacement = randomBytes(content.length);
      await fs.writeFile(`${file}.new`, replacement);
      const later = new Date(Date.now() + 60_000);
      await fs.utimes(`${file}.new`, later, later);
      await fs.rename(`${file}.new`, file);
      const err = await readAt(layer, 1 * MiB, 4096).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RequestError);
      expect((err as RequestError).errno).toBe('EIO');
      expect((err as Error).message).toContain(`http://127.0.0.1:${nginx.port}/golden.raw`);
      expect((err as Error).message).toMatch(/changed under the stack/);
      // Every later read fails too, even of a block fetched before the change.
      await expect(readAt(layer, 0, 4096)).rejects.toMatchObject({ errno: 'EIO' });
      await expect(readAt(layer, 2 * MiB, 4096)).rejects.toMatchObject({ errno: 'EIO' });
      expect(warnings.filter((w) => /changed/.test(w))).toHaveLength(1);
      const fresh = await openRemote(nginx.url('golden.raw'), {});
      try {
        const newPin = (await fresh.pin())!;
        expect(newPin.size).toBe(oldPin.size);
        expect(newPin.etag).not.toBe(oldPin.etag);
        expect((await readAt(fresh, 1 * MiB, 4096)).equals(replacement.subarray(1 * MiB, 1 * MiB + 4096))).toBe(true);
      } finally {
        await fresh.close();
      }
    } finally {
      await layer.close();
    }
    const golden = (await nginx.accessLog()).filter((e) => e.uri === '/golden.raw' && e.method === 'GET');
    expect(golden.some((e) => e.status === 412)).toBe(true);
  });
});
