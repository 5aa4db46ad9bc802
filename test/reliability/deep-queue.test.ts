/**
 * One client queues 16000 overlapping 1 MiB WRITE_ZEROES on the same range of a RAW export:
 * 448 KB of request headers. WRITE_ZEROES carries no payload, so --max-in-flight (bytes of
 * payloads and reads in flight) never makes the server stop reading them. The server must stay
 * within bounded memory while it works through them one after the other (each is a 1 MiB write
 * of zeros, about a millisecond), keep answering, and still exit within 10 s of SIGTERM.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient } from '../../src/nbd/client.js';
import { spawnServer, type SpawnedServer } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { exitOf, rssKiB, signalAndWait } from './helpers/proc.js';

const MiB = 1024 * 1024;
const QUEUED = 16_000;
/** Far above the soak's steady 125-150 MiB with 64 busy connections. */
const RSS_LIMIT_MIB = 512;

describe('a deep queue of overlapping payload-free requests', () => {
  let dir: string;
  let server: SpawnedServer;

  beforeAll(async () => {
    dir = await makeTempDir('stackbd-queue-');
    const raw = path.join(dir, 'disk.raw');
    await fs.writeFile(raw, Buffer.alloc(16 * MiB));
    server = await spawnServer({ args: ['--export', `raw=${raw}`, '--sync-interval', '0'] });
  });
  afterAll(async () => {
    if (server) await signalAndWait(server.process, 'SIGKILL');
    await removeDir(dir);
  });

  it(`keeps the server's memory bounded, answers all ${QUEUED} and exits within 10 s of SIGTERM`, async () => {
    const client = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'raw' });
    let answered = 0;
    const started = Date.now();
    const all = Promise.allSettled(Array.from({ length: QUEUED }, () => client.zero(0, MiB, { noHole: true }).then(() => void answered++)));
    let peak = 0;
    let finished = false;
    void all.then(() => (finished = true));
    // Up to 30 s for the queue; memory is read every 250 ms and the test stops at the limit.
    while (!finished && Date.now() - started < 30_000 && peak < RSS_LIMIT_MIB) {
      await new Promise((r) => setTimeout(r, 250));
      peak = Math.max(peak, Math.round(rssKiB(server.pid) / 1024));
    }
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    const signalled = Date.now();
    process.kill(server.pid, 'SIGTERM');
    const exit = await Promise.race([exitOf(server.process), new Promise<null>((r) => setTimeout(() => r(null), 10_000))]);
    const stopMs = Date.now() - signalled;
    if (exit === null) await signalAndWait(server.process, 'SIGKILL');
    await all;
    console.log(
      `deep queue: ${answered} of ${QUEUED} overlapping WRITE_ZEROES answered after ${seconds} s, server RSS peak ${peak} MiB; ` +
        `SIGTERM: ${exit === null ? 'still running after 10 s' : `exit ${exit.code} after ${stopMs} ms`}`,
    );
    expect(peak, `server RSS reached ${peak} MiB with ${answered} of ${QUEUED} answered`).toBeLessThan(RSS_LIMIT_MIB);
    expect(answered, `only ${answered} of ${QUEUED} answered in ${seconds} s`).toBe(QUEUED);
    expect(exit).toEqual({ code: 0, signal: null });
  }, 90_000);
});
