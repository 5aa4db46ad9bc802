/**
 * Shutdown: SIGTERM to the real `stackbd serve` while requests are in flight on several
 * connections (writes on a RAW export and on a RAW + ASIF stack, and a slow queue of
 * overlapping WRITE_ZEROES that keeps the server draining for a while), while one client is
 * still negotiating, and while new clients try to connect.
 * - Every request either completes (and then its data is in the files after the exit), or
 *   fails with ESHUTDOWN, or goes unanswered because the server closed the connection.
 * - The server syncs (the overlay checks clean and holds every acknowledged write, with no
 *   FLUSH sent and the sync timer off) and exits 0 within 10 s.
 * - The negotiating client is never served during the shutdown: an option it sends then gets
 *   ERR_SHUTDOWN, or its connection is closed (the test reports which); new connections get
 *   no greeting.
 * - Requests the server had not taken in are not run. To have some for certain, a bulk writer
 *   holds the server at its in-flight limit before the SIGTERM (it stops reading its replies,
 *   which the server counts until they are sent), and the test waits until the server says it
 *   stopped reading that connection.
 * (deep-queue.test.ts holds the server to the same bound with a deep queue of payload-free
 * requests.)
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Magic, Option, OptionReply } from '../../src/nbd/constants.js';
import { NbdClient, NbdRequestError } from '../../src/nbd/client.js';
import { encodeOption } from '../../src/nbd/handshake.js';
import { DiskImage } from '../../src/stack/disk-image.js';
import { socketOf } from '../helpers/client-socket.js';
import { RawConnection } from '../helpers/raw-connection.js';
import { runStackbd } from '../helpers/run-command.js';
import { spawnServer, type SpawnedServer } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { exitOf, signalAndWait } from './helpers/proc.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 16 * MiB;
const ESHUTDOWN = 108;
const SLOW_ZEROES = 600;

type Outcome = 'acknowledged' | 'ESHUTDOWN' | 'dropped';

async function outcome(p: Promise<void>): Promise<Outcome> {
  try {
    await p;
    return 'acknowledged';
  } catch (err) {
    if (err instanceof NbdRequestError) {
      if (err.errno === ESHUTDOWN) return 'ESHUTDOWN';
      throw new Error(`a request failed with error ${err.errno} (${err.message}) during shutdown, not ESHUTDOWN`);
    }
    // EPIPE: the server closed the connection while the client still had requests to send.
    if (['connection closed', 'ECONNRESET', 'EPIPE'].some((text) => String(err).includes(text))) return 'dropped';
    throw err;
  }
}

/** What a client that connects during the shutdown gets before the server lets it go. */
async function connectDuringShutdown(port: number): Promise<{ refused: boolean; bytes: number }> {
  const socket = net.connect({ host: '127.0.0.1', port });
  let bytes = 0;
  socket.on('data', (d: Buffer) => (bytes += d.length));
  return new Promise((resolve) => {
    socket.once('error', (err: NodeJS.ErrnoException) => resolve({ refused: err.code === 'ECONNREFUSED', bytes }));
    socket.once('close', () => resolve({ refused: false, bytes }));
    setTimeout(() => {
      socket.destroy();
      resolve({ refused: false, bytes });
    }, 5000);
  });
}

describe('SIGTERM with requests in flight', () => {
  let dir: string;
  let raw: string;
  let base: string;
  let overlay: string;
  let server: SpawnedServer;

  beforeAll(async () => {
    dir = await makeTempDir('stackbd-shutdown-');
    raw = path.join(dir, 'disk.raw');
    base = path.join(dir, 'base.raw');
    overlay = path.join(dir, 'overlay.asif');
    await fs.writeFile(raw, randomBytes(SIZE));
    await fs.writeFile(base, randomBytes(SIZE));
    const made = await runStackbd(['append', base, '--new', overlay]);
    expect(made.code, made.stderr).toBe(0);
    // --max-in-flight 8M: the bulk writer below reaches it with a few reads; debug logs say when
    // the server stops reading a connection at its limit.
    server = await spawnServer({
      args: ['--export', `raw=${raw}`, '--export', `stack=${base},${overlay}`, '--sync-interval', '0', '--max-in-flight', '8M', '--admin-socket', path.join(dir, 'admin.sock')],
      logLevel: 'debug',
    });
  });
  afterAll(async () => {
    if (server) await signalAndWait(server.process, 'SIGKILL');
    await removeDir(dir);
  });

  it('finishes or fails what is in flight, never serves a negotiating client, syncs and exits 0 within 10 s', async () => {
    const target = { kind: 'tcp' as const, host: '127.0.0.1', port: server.port };
    const slow = await NbdClient.connect(target, { exportName: 'raw' });
    const rawWriter = await NbdClient.connect(target, { exportName: 'raw', structuredReplies: false });
    const stackWriter = await NbdClient.connect(target, { exportName: 'stack', extendedHeaders: true });

    // A client in the middle of negotiating: greeting read, one option answered.
    const negotiating = await RawConnection.open(server.port);
    const greeting = await negotiating.read(18);
    expect(greeting.readBigUInt64BE(0)).toBe(Magic.NBDMAGIC);
    negotiating.write(Buffer.from([0, 0, 0, 3]), encodeOption(Option.LIST));
    const listed = await negotiating.read(20);
    expect(listed.readBigUInt64BE(0)).toBe(Magic.OPTION_REPLY);
    await negotiating.read(listed.readUInt32BE(16));
    for (;;) {
      const head = await negotiating.read(20);
      await negotiating.read(head.readUInt32BE(16));
      if (head.readUInt32BE(12) === OptionReply.ACK) break;
    }

    // A bulk writer held at the bytes-in-flight limit, so that at the shutdown part of its
    // requests were never taken in: 12 rounds of writes over 8 slots of 1 MiB. The first round is
    // acknowledged; then it stops reading replies and asks for 5 reads of 16 MiB, whose replies
    // stay in the server's socket and count against the limit (far more than the kernel's
    // buffers take), so the server stops reading this connection; the other 11 rounds follow.
    // While its replies are unsent the server cannot finish its shutdown either: the test lets
    // them go once it has checked what a shutting-down server does.
    // (Outcomes are taken at once, so no rejection goes unhandled while the test waits.)
    const bulkWriter = await NbdClient.connect(target, { exportName: 'raw' });
    const bulk: Array<{ slot: number; data: Buffer; done: Promise<Outcome> }> = [];
    const bulkWrite = (i: number): void => {
      const data = randomBytes(MiB);
      bulk.push({ slot: i % 8, data, done: outcome(bulkWriter.pwrite(data, 4 * MiB + (i % 8) * MiB)) });
    };
    for (let i = 0; i < 8; i++) bulkWrite(i);
    expect(await Promise.all(bulk.map((b) => b.done))).toEqual(Array(8).fill('acknowledged'));
    const bulkSocket = socketOf(bulkWriter);
    bulkSocket.pause();
    const bulkReads = Array.from({ length: 5 }, () => outcome(bulkWriter.pread(0, SIZE).then(() => undefined)));
    for (let i = 8; i < 96; i++) bulkWrite(i);
    // Held: the server logged that it stopped reading the connection (and has not resumed), and
    // the client holds requests it could not hand over.
    const pauses = (): Array<{ conn: number; msg: string }> =>
      server
        .logs()
        .split('\n')
        .filter((l) => l.includes('paused reading') || l.includes('resumed reading'))
        .map((l) => JSON.parse(l) as { conn: number; msg: string });
    const held = (): boolean => {
      const events = pauses();
      return events.length > 0 && events[events.length - 1].msg.startsWith('paused') && bulkSocket.writableLength > 0;
    };
    for (const deadline = Date.now() + 30_000; !held(); await new Promise((r) => setTimeout(r, 20))) {
      if (Date.now() > deadline) throw new Error(`the server never stopped reading the bulk writer at its in-flight limit: ${JSON.stringify(pauses())}, ${bulkSocket.writableLength} bytes unsent`);
    }
    // The metrics say so too: exactly the held connection is not being read.
    const metrics = await runStackbd(['ctl', 'metrics', '--socket', path.join(dir, 'admin.sock')]);
    expect(metrics.code, metrics.stderr).toBe(0);
    expect(metrics.stdout).toMatch(/^stackbd_connections_not_reading 1$/m);

    // Writes on a RAW export and on a stack: a quarter of them answered before the signal.
    const writes: Array<{ client: 'raw' | 'stack'; offset: number; data: Buffer; done: Promise<Outcome> }> = [];
    for (let i = 0; i < 48; i++) {
      const data = randomBytes(64 * KiB + (i % 3) * 512);
      const offset = i * 80 * KiB + (i % 5) * 512 + (i % 2) * 7;
      writes.push({ client: 'raw', offset, data, done: outcome(rawWriter.pwrite(data, offset)) });
      writes.push({ client: 'stack', offset, data, done: outcome(stackWriter.pwrite(data, offset)) });
    }
    let answered = 0;
    await new Promise<void>((resolve) => {
      for (const w of writes) void w.done.then(() => ++answered === 24 && resolve());
    });
    // The slow part: overlapping 1 MiB zeroes run one after the other; the signal goes as soon
    // as the first is answered, when the server has taken in all of them (600 small requests,
    // sent at once) and has most still to run.
    let zeroesDone = 0;
    const zeroes = Array.from({ length: SLOW_ZEROES }, () => outcome(slow.zero(SIZE - MiB, MiB, { noHole: true })).finally(() => zeroesDone++));
    await Promise.race(zeroes);
    const zeroesDoneAtSignal = zeroesDone;
    expect(new Set(pauses().map((e) => e.conn)).size, 'only the bulk writer reaches the limit').toBe(1);
    expect(held(), 'the bulk writer is still held at the signal').toBe(true);
    const unsentAtSignal = bulkSocket.writableLength;
    const signalled = Date.now();
    process.kill(server.pid, 'SIGTERM');
    const exited = exitOf(server.process);
    await server.waitForLog('shutting down', 5000).catch((err: unknown) => {
      throw new Error(`${String(err)}\nexit: ${server.process.exitCode} ${server.process.signalCode}`);
    });

    // During the shutdown: the negotiating client asks again; a new client tries to connect.
    negotiating.write(encodeOption(Option.LIST));
    let negotiationOutcome: string;
    try {
      const head = await negotiating.read(20, 5000);
      const type = head.readUInt32BE(12);
      negotiationOutcome = type === OptionReply.ERR_SHUTDOWN ? 'ERR_SHUTDOWN' : `reply type 0x${type.toString(16)}`;
    } catch (err) {
      negotiationOutcome = String(err).includes('closed') ? 'closed' : String(err);
    }
    const late = await connectDuringShutdown(server.port);
    // Still shutting down: the bulk writer's replies hold it. Now they may go.
    const aliveDuringShutdown = server.process.exitCode === null;
    bulkSocket.resume();

    const results = await Promise.all([...zeroes, ...writes.map((w) => w.done)]);
    const bulkOutcomes = await Promise.all(bulk.map((b) => b.done));
    const readOutcomes = await Promise.all(bulkReads);
    const exit = await exited;
    const stopMs = Date.now() - signalled;

    const tally = (from: Outcome[]): Record<Outcome, number> => ({
      acknowledged: from.filter((o) => o === 'acknowledged').length,
      ESHUTDOWN: from.filter((o) => o === 'ESHUTDOWN').length,
      dropped: from.filter((o) => o === 'dropped').length,
    });
    const zeroTally = tally(results.slice(0, SLOW_ZEROES));
    const writeOutcomes = results.slice(SLOW_ZEROES);
    const writeTally = tally(writeOutcomes);
    const bulkTally = tally(bulkOutcomes);
    console.log(
      `shutdown: exit ${exit.code} after ${stopMs} ms; ${SLOW_ZEROES} slow zeroes: ${JSON.stringify(zeroTally)}; 96 writes: ${JSON.stringify(writeTally)}; 96 bulk 1 MiB writes: ${JSON.stringify(bulkTally)}; ` +
        `bulk reads: ${JSON.stringify(tally(readOutcomes))}; at the signal: ${zeroesDoneAtSignal} zeroes answered, ${unsentAtSignal} bytes of the bulk writer unsent; ` +
        `negotiating client: ${negotiationOutcome}; new connection: ${late.refused ? 'refused' : `closed after ${late.bytes} bytes`}`,
    );

    expect(aliveDuringShutdown, 'the held bulk writer kept the server draining').toBe(true);
    expect(exit, server.logs().split('\n').filter((l) => !l.includes('"level":20') || l.includes('reading')).slice(-40).join('\n')).toEqual({ code: 0, signal: null });
    expect(stopMs).toBeLessThan(10_000);
    expect(server.logs()).toContain('server stopped');
    expect(['ERR_SHUTDOWN', 'closed'], 'a negotiating client is never served during the shutdown').toContain(negotiationOutcome);
    expect(late.bytes, 'a client connecting during the shutdown gets no greeting').toBe(0);
    // Requests already taken in were finished: the slow queue, which had answered only its first
    // at the signal, went on.
    expect(zeroesDoneAtSignal).toBeLessThan(SLOW_ZEROES);
    expect(zeroTally.acknowledged).toBeGreaterThan(zeroesDoneAtSignal);

    // Every acknowledged write is in the files: the RAW file, and the overlay (synced at shutdown).
    const rawBytes = await fs.readFile(raw);
    const check = await runStackbd(['check', overlay]);
    expect(check.code, `the overlay is clean after a shutdown\n${check.stdout}${check.stderr}`).toBe(0);
    const stack = await DiskImage.open([base, overlay]);
    try {
      for (const [i, w] of writes.entries()) {
        if (writeOutcomes[i] !== 'acknowledged') continue;
        const got = w.client === 'raw' ? rawBytes.subarray(w.offset, w.offset + w.data.length) : Buffer.alloc(w.data.length);
        if (w.client === 'stack') await stack.stack.read(got, w.offset);
        expect(got.equals(w.data), `${w.client} write ${w.offset}+${w.data.length} was acknowledged but is not in the file`).toBe(true);
      }
    } finally {
      await stack.close();
    }
    if (zeroTally.acknowledged > 0) expect(rawBytes.subarray(SIZE - MiB).every((b) => b === 0)).toBe(true);
    // Each bulk slot holds its last acknowledged write: overlapping writes land in arrival order,
    // and none that was taken in went unanswered.
    for (let slot = 0; slot < 8; slot++) {
      let last = -1;
      bulk.forEach((b, i) => {
        if (b.slot === slot && bulkOutcomes[i] === 'acknowledged') last = i;
      });
      if (last < 0) continue;
      const at = 4 * MiB + slot * MiB;
      expect(rawBytes.subarray(at, at + MiB).equals(bulk[last].data), `bulk slot ${slot} holds its last acknowledged write (#${last})`).toBe(true);
    }
    expect(bulkTally.acknowledged).toBeGreaterThan(0);
    expect(bulkTally.dropped + bulkTally.ESHUTDOWN, 'requests the server had not taken in were not run').toBeGreaterThan(0);
    expect(writeTally.acknowledged).toBeGreaterThan(0);
    negotiating.destroy();
  }, 60_000);
});
