/**
 * Remote HTTP bases through a fault-injecting proxy in front of nginx: every fault the network
 * or a broken server can produce ends in the right bytes (retried) or a clear EIO for that
 * read only, and later reads are served again.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RequestError } from '../../src/block/errors.js';
import type { Layer } from '../../src/formats/layer.js';
import { openRemote, type RemoteOptions } from '../../src/remote/index.js';
import type { Clock } from '../../src/remote/retry.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { startFaultProxy, type Fault, type FaultProxy } from './helpers/fault-proxy.js';
import { readAt } from './helpers/read-at.js';
import { startNginx, type Nginx } from './helpers/nginx.js';

const KiB = 1024;
let dir: string;
let nginx: Nginx;
let proxy: FaultProxy;
let content: Buffer;

/** Backoff waits are skipped (the schedule itself is unit-tested); timeouts are short so stalls end soon. */
const noWait: Clock = { now: () => Date.now(), random: () => 0.5, sleep: () => new Promise((r) => setImmediate(r)) };
const base: RemoteOptions = { blockSize: 64 * KiB, readaheadMaxBytes: 0, cacheBytes: 0, clock: noWait, timeouts: { headersMs: 400, bodyMs: 400 } };


function expected(offset: number, length: number): Buffer {
  return content.subarray(offset, offset + length);
}

beforeAll(async () => {
  dir = await makeTempDir('stackbd-remote-faults-');
  await fs.mkdir(path.join(dir, 'www'));
  content = randomBytes(2 * 1024 * KiB);
  await fs.writeFile(path.join(dir, 'www', 'base.raw'), content);
  nginx = await startNginx({ dir, root: path.join(dir, 'www') });
  proxy = await startFaultProxy({ upstreamPort: nginx.port });
});

afterAll(async () => {
  await proxy?.close();
  await nginx?.stop();
  await removeDir(dir);
});

describe('an http:// base behind a faulty network', () => {
  const retried: Fault[] = ['reset', 'stall', 'stall-body', 'short', 'status-503', 'status-429', 'full-200', 'wrong-range'];
  for (const fault of retried) {
    it(`retries after "${fault}" and returns the right bytes`, async () => {
      const layer = await openRemote(proxy.url('base.raw'), base);
      try {
        const before = proxy.counters.faults;
        proxy.inject(fault, 2);
        const offset = 300 * KiB + 17;
        expect((await readAt(layer, offset, 100 * KiB)).equals(expected(offset, 100 * KiB))).toBe(true);
        expect(proxy.pending()).toBe(0);
        expect(proxy.counters.faults - before).toBe(2);
      } finally {
        await layer.close();
      }
    });
  }

  it('fails one read with EIO when the retry budget is spent, then serves the next read', async () => {
    const layer = await openRemote(proxy.url('base.raw'), { ...base, retries: 2 });
    try {
      proxy.inject('reset', 3);
      const err = await readAt(layer, 0, 4096).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RequestError);
      expect((err as RequestError).errno).toBe('EIO');
      expect((err as Error).message).toMatch(new RegExp(`^http://127.0.0.1:${proxy.port}/base.raw: GET bytes=0-65535 failed after 3 attempts`));
      expect((await readAt(layer, 0, 4096)).equals(expected(0, 4096))).toBe(true);
    } finally {
      await layer.close();
    }
  });

  it('does not retry a 403, and the next read is served', async () => {
    const layer = await openRemote(proxy.url('base.raw'), base);
    try {
      const gets = proxy.counters.gets;
      proxy.inject('status-403');
      await expect(readAt(layer, 128 * KiB, 4096)).rejects.toMatchObject({ errno: 'EIO', message: expect.stringMatching(/HTTP 403/) });
      expect(proxy.counters.gets - gets).toBe(1);
      expect((await readAt(layer, 128 * KiB, 4096)).equals(expected(128 * KiB, 4096))).toBe(true);
    } finally {
      await layer.close();
    }
  });

  it('opens with a 1-byte GET when HEAD is refused, and still pins the ETag', async () => {
    proxy.refuseHead = true;
    try {
      const layer = await openRemote(proxy.url('base.raw'), base);
      try {
        expect(layer.size).toBe(content.length);
        expect(Object.keys((await layer.pin()) ?? {}).sort()).toEqual(['etag', 'size']);
      } finally {
        await layer.close();
      }
    } finally {
      proxy.refuseHead = false;
    }
  });

  it('serves a base that cannot be pinned, and says so', async () => {
    proxy.stripValidators = true;
    try {
      const warnings: string[] = [];
      const layer = await openRemote(proxy.url('base.raw'), { ...base, onWarning: (m) => warnings.push(m) });
      try {
        expect(await layer.pin()).toEqual({ size: content.length });
        expect(await layer.details?.()).toMatchObject({ pinned: false, warning: expect.stringMatching(/cannot be pinned/) });
        expect(warnings).toEqual([expect.stringMatching(/cannot be pinned/)]);
        expect((await readAt(layer, 5000, 5000)).equals(expected(5000, 5000))).toBe(true);
      } finally {
        await layer.close();
      }
    } finally {
      proxy.stripValidators = false;
    }
  });

  it('refuses to open a server that answers a range GET with the whole object', async () => {
    proxy.inject('full-200');
    await expect(openRemote(proxy.url('base.raw'), base)).rejects.toThrow(/does not support range requests/);
    expect(proxy.pending()).toBe(0);
  });

  it('keeps every byte right under a mix of faults, 5 ms latency each way and many concurrent reads', async () => {
    proxy.latencyMs = 5;
    const layer = await openRemote(proxy.url('base.raw'), { ...base, retries: 12, cacheBytes: 256 * KiB, readaheadMaxBytes: 512 * KiB });
    try {
      const faults: Fault[] = ['reset', 'short', 'status-503', 'full-200', 'wrong-range', 'status-429', 'stall-body'];
      // 503 asks for a 1 s Retry-After, which is honoured even with the test clock: keep it rare.
      for (let i = 0; i < 28; i++) proxy.inject(faults[i % faults.length] === 'status-503' && i > 7 ? 'reset' : faults[i % faults.length]);
      let seed = 7;
      const next = (): number => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31);
      const reads = Array.from({ length: 120 }, (_, i) => {
        const offset = i < 40 ? i * 16 * KiB : next() % (content.length - 40 * KiB);
        const length = 1 + (next() % (40 * KiB));
        return readAt(layer, offset, length).then((b) => b.equals(expected(offset, length)));
      });
      expect(await Promise.all(reads)).toEqual(reads.map(() => true));
    } finally {
      proxy.latencyMs = 0;
      await layer.close();
    }
  });
});
