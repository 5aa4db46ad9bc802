/**
 * Protocol fuzzing against the real `stackbd serve` (a child process): fast-check generates
 * byte streams a client could send, valid and malformed, and sends them over a plain socket in
 * random pieces:
 * - negotiation: client flags (valid and random), option sequences of known and unknown
 *   options with well-formed, random, too short, too long and huge payloads, wrong magics,
 *   frames cut anywhere;
 * - transmission, after a valid handshake in simple, structured or extended mode: requests of
 *   every command with valid and invalid flags, offsets and lengths past the end and near
 *   2^64, payloads shorter or longer than declared, wrong magics, random bytes.
 * After each case the server must have closed or finished the connection within a time limit,
 * answered the options it answered with well-formed replies, still run, and a fresh client
 * must negotiate and read the canary data of both exports (a RAW file and a RAW + ASIF stack)
 * unchanged. Writes of the fuzzer only ever aim at the scratch half of each export, so the
 * canary half must never change. The server's RSS is read from /proc before and after.
 *
 * STACKBD_FUZZ_RUNS sets the number of cases of each kind (default 300).
 */
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Command, CommandFlag, Info, Magic, Option, OptionReply } from '../../src/nbd/constants.js';
import { encodeRequestHeader } from '../../src/nbd/codec.js';
import { NbdClient } from '../../src/nbd/client.js';
import { encodeInfoRequest, encodeMetaContextRequest } from '../../src/nbd/handshake.js';
import { patternBytes } from '../formats/helpers/disk-model.js';
import { runStackbd } from '../helpers/run-command.js';
import { spawnServer, type SpawnedServer } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { rssKiB, signalAndWait } from './helpers/proc.js';

const MiB = 1024 * 1024;
const SIZE = 4 * MiB;
/** The first half of each export holds known data no fuzz case may change. */
const CANARY = SIZE / 2;
const RUNS = Number(process.env.STACKBD_FUZZ_RUNS ?? 300);
const SEED = Number(process.env.STACKBD_FUZZ_SEED ?? 4242);
const EXPORTS = ['raw', 'stack'] as const;
const TWO_64 = 2n ** 64n;

let dir: string;
let server: SpawnedServer;
const canary = new Map<string, Buffer>();
let rssStart = 0;
let rssMax = 0;
let cases = 0;

// ---- byte-level helpers ----

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0, 0);
  return b;
}

/** An option frame whose declared length may differ from the data that follows. */
function optionFrame(magic: bigint, option: number, declared: number, data: Buffer): Buffer {
  const head = Buffer.alloc(16);
  head.writeBigUInt64BE(magic, 0);
  head.writeUInt32BE(option >>> 0, 8);
  head.writeUInt32BE(declared >>> 0, 12);
  return Buffer.concat([head, data]);
}

/** A request header with any 64-bit offset and length (encodeRequestHeader takes numbers). */
function requestFrame(extended: boolean, magic: number, flags: number, type: number, offset: bigint, length: bigint): Buffer {
  const b = encodeRequestHeader({ flags: flags & 0xffff, type: type & 0xffff, cookie: 7n, offset: 0, length: 0 }, extended);
  b.writeUInt32BE(magic >>> 0, 0);
  b.writeBigUInt64BE(offset % TWO_64, 16);
  if (extended) b.writeBigUInt64BE(length % TWO_64, 24);
  else b.writeUInt32BE(Number(length % 2n ** 32n), 24);
  return b;
}

// ---- generators ----

const exportName = fc.oneof(fc.constantFrom('raw', 'stack', '', 'nope'), fc.string({ maxLength: 12 }));
const randomBytes = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));

const wellFormedData = (option: number): fc.Arbitrary<Buffer> => {
  switch (option) {
    case Option.INFO:
    case Option.GO:
      return fc
        .record({ name: exportName, infos: fc.array(fc.oneof(fc.constantFrom(Info.EXPORT, Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE), fc.nat(0xffff)), { maxLength: 5 }) })
        .map((r) => encodeInfoRequest(r));
    case Option.LIST_META_CONTEXT:
    case Option.SET_META_CONTEXT:
      return fc
        .record({
          name: exportName,
          queries: fc.array(fc.oneof(fc.constantFrom('base:allocation', 'qemu:allocation-depth', 'qemu:dirty-bitmap:overlay', 'qemu:', 'base:', ''), fc.string({ maxLength: 20 })), { maxLength: 4 }),
        })
        .map((r) => encodeMetaContextRequest(r));
    case Option.EXPORT_NAME:
      return exportName.map((n) => Buffer.from(n, 'utf8'));
    default:
      return fc.constant(Buffer.alloc(0));
  }
};

const optionNumber = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(Option.LIST, Option.INFO, Option.GO, Option.STRUCTURED_REPLY, Option.EXTENDED_HEADERS, Option.LIST_META_CONTEXT, Option.SET_META_CONTEXT, Option.STARTTLS, Option.ABORT, Option.EXPORT_NAME, Option.PEEK_EXPORT) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) },
);

interface OptionCase {
  option: number;
  magic: bigint;
  data: Buffer;
  declared: number;
}

const optionCase: fc.Arbitrary<OptionCase> = optionNumber.chain((option) =>
  fc
    .tuple(
      fc.oneof({ weight: 12, arbitrary: fc.constant(Magic.IHAVEOPT) }, { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: TWO_64 - 1n }) }),
      fc.oneof({ weight: 4, arbitrary: wellFormedData(option) }, { weight: 2, arbitrary: randomBytes(64) }),
      fc.oneof(
        { weight: 8, arbitrary: fc.constant('exact' as const) },
        { weight: 1, arbitrary: fc.constant('short' as const) },
        { weight: 1, arbitrary: fc.constant('long' as const) },
        { weight: 1, arbitrary: fc.constantFrom(0xffffffff, 0x80000000, 65 * 1024, 64 * 1024, 64 * 1024 + 1) },
      ),
    )
    .map(([magic, data, length]): OptionCase => {
      const declared = length === 'exact' ? data.length : length === 'short' ? Math.max(0, data.length - 3) : length === 'long' ? data.length + 5 : length;
      return { option, magic, data, declared };
    }),
);

const negotiationCase = fc.record({
  clientFlags: fc.oneof({ weight: 8, arbitrary: fc.constantFrom(1, 3) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) }),
  options: fc.array(optionCase, { minLength: 0, maxLength: 8 }),
  /** Cut the stream after this many bytes (a frame cut short), or send it all. */
  cut: fc.option(fc.nat(), { freq: 4 }),
  pieces: fc.integer({ min: 1, max: 6 }),
});

type Mode = 'simple' | 'structured' | 'extended';

interface RequestCase {
  kind: 'valid' | 'mutated' | 'random';
  bytes: Buffer;
}

/** A request; every write-type one (and every mutated one) aims at the scratch half or past the end. */
const requestCase = (extended: boolean): fc.Arbitrary<RequestCase> => {
  const scratchOffset = fc.integer({ min: CANARY, max: SIZE - 1 });
  const length = fc.oneof(fc.integer({ min: 0, max: 70_000 }), fc.constantFrom(1, 512, 4096));
  const valid = fc
    .record({
      type: fc.constantFrom(Command.READ, Command.WRITE, Command.FLUSH, Command.TRIM, Command.CACHE, Command.WRITE_ZEROES, Command.BLOCK_STATUS),
      flags: fc.subarray([CommandFlag.FUA, CommandFlag.NO_HOLE, CommandFlag.DF, CommandFlag.REQ_ONE, CommandFlag.FAST_ZERO]).map((l) => l.reduce((a, b) => a | b, 0)),
      canaryRead: fc.boolean(),
      offset: scratchOffset,
      length,
      seed: fc.nat(),
    })
    .map(({ type, flags, canaryRead, offset, length: len, seed }): RequestCase => {
      const off = type === Command.READ && canaryRead ? offset - CANARY : offset;
      const n = Math.min(len, SIZE - off);
      const f = type === Command.WRITE && extended ? flags | CommandFlag.PAYLOAD_LEN : flags;
      const head = requestFrame(extended, extended ? Magic.EXTENDED_REQUEST : Magic.REQUEST, f, type, BigInt(off), BigInt(type === Command.FLUSH ? 0 : n));
      return { kind: 'valid', bytes: type === Command.WRITE ? Buffer.concat([head, patternBytes(n, seed)]) : head };
    });
  const mutated = fc
    .record({
      magicOk: fc.boolean(),
      type: fc.oneof(fc.integer({ min: 0, max: 9 }), fc.nat(0xffff)),
      flags: fc.nat(0xffff),
      offset: fc.oneof(scratchOffset.map(BigInt), fc.bigInt({ min: BigInt(SIZE), max: TWO_64 - 1n }), fc.constantFrom(TWO_64 - 1n, 2n ** 63n, 2n ** 53n, BigInt(SIZE))),
      length: fc.oneof(length.map(BigInt), fc.constantFrom(2n ** 32n - 1n, 2n ** 31n, 32n * 1024n * 1024n + 1n, 64n * 1024n * 1024n + 1n, TWO_64 - 1n, 0n)),
      payload: randomBytes(600),
    })
    .map(({ magicOk, type, flags, offset, length: len, payload }): RequestCase => {
      const magic = magicOk ? (extended ? Magic.EXTENDED_REQUEST : Magic.REQUEST) : (extended ? Magic.REQUEST : Magic.EXTENDED_REQUEST);
      return { kind: 'mutated', bytes: Buffer.concat([requestFrame(extended, magic, flags, type, offset, len), payload]) };
    });
  const random = randomBytes(200).map((bytes): RequestCase => ({ kind: 'random', bytes }));
  return fc.oneof({ weight: 6, arbitrary: valid }, { weight: 3, arbitrary: mutated }, { weight: 1, arbitrary: random });
};

const transmissionCase = fc.constantFrom<Mode>('simple', 'structured', 'extended').chain((mode) =>
  fc.record({
    mode: fc.constant(mode),
    exportName: fc.constantFrom(...EXPORTS),
    metaContexts: fc.boolean(),
    requests: fc.array(requestCase(mode === 'extended'), { minLength: 1, maxLength: 12 }),
    end: fc.constantFrom('disc', 'close', 'cut'),
    cut: fc.nat(),
    pieces: fc.integer({ min: 1, max: 6 }),
  }),
);

/** The options of a valid handshake, pipelined, ending with GO. */
function handshake(mode: Mode, name: string, metaContexts: boolean): Buffer {
  const parts = [u32(3)];
  if (mode === 'extended') parts.push(optionFrame(Magic.IHAVEOPT, Option.EXTENDED_HEADERS, 0, Buffer.alloc(0)));
  if (mode === 'structured') parts.push(optionFrame(Magic.IHAVEOPT, Option.STRUCTURED_REPLY, 0, Buffer.alloc(0)));
  if (metaContexts && mode !== 'simple') {
    const data = encodeMetaContextRequest({ name, queries: ['base:allocation', 'qemu:allocation-depth'] });
    parts.push(optionFrame(Magic.IHAVEOPT, Option.SET_META_CONTEXT, data.length, data));
  }
  const go = encodeInfoRequest({ name, infos: [Info.BLOCK_SIZE] });
  parts.push(optionFrame(Magic.IHAVEOPT, Option.GO, go.length, go));
  return Buffer.concat(parts);
}

// ---- running a case ----

/** Sends `bytes` in `pieces` pieces, half-closes, and collects what the server sent until it closed. */
async function sendCase(bytes: Buffer, pieces: number, halfClose: boolean): Promise<Buffer> {
  const socket = net.connect({ host: '127.0.0.1', port: server.port });
  const received: Buffer[] = [];
  socket.on('data', (d: Buffer) => received.push(d));
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const size = Math.ceil(bytes.length / pieces) || 1;
  for (let at = 0; at < bytes.length && !socket.destroyed; at += size) {
    socket.write(bytes.subarray(at, at + size));
    await new Promise<void>((r) => setImmediate(r));
  }
  if (halfClose) socket.end();
  else socket.destroy();
  const limit = setTimeout(() => socket.destroy(new Error('hang')), 10_000);
  let hung = false;
  socket.once('error', (err) => {
    if (err.message === 'hang') hung = true;
  });
  await closed;
  clearTimeout(limit);
  if (hung) throw new Error(`the server neither finished nor closed the connection within 10 s (case of ${bytes.length} bytes)`);
  return Buffer.concat(received);
}

/**
 * The server's negotiation replies: the greeting, then option replies with the right magic,
 * each naming an option the case sent, until transmission starts or the bytes end.
 */
function checkNegotiationReplies(bytes: Buffer, sent: ReadonlySet<number>): string | null {
  if (bytes.length === 0) return null;
  if (bytes.length < 18 || bytes.readBigUInt64BE(0) !== Magic.NBDMAGIC || bytes.readBigUInt64BE(8) !== Magic.IHAVEOPT) return 'no valid greeting';
  let at = 18;
  while (at + 20 <= bytes.length) {
    if (bytes.readBigUInt64BE(at) !== Magic.OPTION_REPLY) {
      // After EXPORT_NAME the server answers with the export's size and flags, not an option reply.
      return sent.has(Option.EXPORT_NAME) ? null : `bad option reply magic at byte ${at}`;
    }
    const option = bytes.readUInt32BE(at + 8);
    const type = bytes.readUInt32BE(at + 12);
    const length = bytes.readUInt32BE(at + 16);
    if (!sent.has(option)) return `reply to option ${option}, which the case never sent`;
    if (length > 64 * 1024) return `option reply of ${length} bytes`;
    at += 20 + length;
    if (option === Option.GO && type === OptionReply.ACK) return null;
  }
  return null;
}

async function verifyServer(what: string): Promise<void> {
  cases++;
  expect(server.process.exitCode, `${what}: the server exited`).toBeNull();
  expect(server.process.signalCode, `${what}: the server died of a signal`).toBeNull();
  const name = EXPORTS[cases % 2];
  const client = await NbdClient.connect(
    { kind: 'tcp', host: '127.0.0.1', port: server.port },
    { exportName: name, structuredReplies: cases % 3 !== 0, extendedHeaders: cases % 3 === 2 },
  );
  const got = await client.pread(0, CANARY);
  await client.disconnect();
  expect(got.equals(canary.get(name)!), `${what}: the canary data of "${name}" changed`).toBe(true);
  if (cases % 25 === 0) rssMax = Math.max(rssMax, rssKiB(server.pid));
}

describe('protocol fuzzing against stackbd serve', () => {
  beforeAll(async () => {
    dir = await makeTempDir('stackbd-fuzz-');
    const rawFile = path.join(dir, 'disk.raw');
    const base = path.join(dir, 'base.raw');
    const overlay = path.join(dir, 'overlay.asif');
    await fs.writeFile(rawFile, Buffer.concat([patternBytes(CANARY, 1), Buffer.alloc(SIZE - CANARY)]));
    await fs.writeFile(base, Buffer.concat([patternBytes(CANARY, 2), patternBytes(SIZE - CANARY, 3)]));
    const made = await runStackbd(['append', base, '--new', overlay]);
    expect(made.code, made.stderr).toBe(0);
    server = await spawnServer({ args: ['--export', `raw=${rawFile}`, '--export', `stack=${base},${overlay}`, '--handshake-timeout', '5', '--sync-interval', '1'] });
    // The stack's canary: the base, with overlay data written through the server on top.
    const client = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: server.port }, { exportName: 'stack' });
    await client.pwrite(patternBytes(300_000, 4), 100_000);
    await client.pwrite(patternBytes(1000, 5), 1_048_000);
    await client.flush();
    canary.set('stack', await client.pread(0, CANARY));
    await client.disconnect();
    canary.set('raw', patternBytes(CANARY, 1));
    for (let i = 0; i < 20; i++) await verifyServer('warm-up');
    rssStart = rssKiB(server.pid);
    rssMax = rssStart;
  });
  afterAll(async () => {
    if (server) {
      const exit = await signalAndWait(server.process, 'SIGTERM');
      expect(exit).toEqual({ code: 0, signal: null });
    }
    await removeDir(dir);
  });

  it('survives generated negotiation streams: valid and malformed options, magics, lengths, cuts', async () => {
    await fc.assert(
      fc.asyncProperty(negotiationCase, async (c) => {
        let bytes = Buffer.concat([u32(c.clientFlags), ...c.options.map((o) => optionFrame(o.magic, o.option, o.declared, o.data))]);
        if (c.cut !== null) bytes = bytes.subarray(0, c.cut % (bytes.length + 1));
        const replies = await sendCase(bytes, c.pieces, true);
        const problem = checkNegotiationReplies(replies, new Set(c.options.map((o) => o.option)));
        expect(problem, `negotiation case ${JSON.stringify({ ...c, options: c.options.map((o) => ({ ...o, magic: o.magic.toString(16), data: o.data.toString('hex') })) })}`).toBeNull();
        await verifyServer('negotiation case');
      }),
      { numRuns: RUNS, seed: SEED, endOnFailure: true },
    );
  }, 60_000 + RUNS * 200);

  it('survives generated request streams after a valid handshake: bad magics, flags, offsets, lengths, payloads, random bytes', async () => {
    await fc.assert(
      fc.asyncProperty(transmissionCase, async (c) => {
        let stream = Buffer.concat(c.requests.map((r) => r.bytes));
        if (c.end === 'cut') stream = stream.subarray(0, c.cut % (stream.length + 1));
        if (c.end === 'disc') stream = Buffer.concat([stream, requestFrame(c.mode === 'extended', c.mode === 'extended' ? Magic.EXTENDED_REQUEST : Magic.REQUEST, 0, Command.DISC, 0n, 0n)]);
        await sendCase(Buffer.concat([handshake(c.mode, c.exportName, c.metaContexts), stream]), c.pieces, c.end !== 'close');
        await verifyServer(`transmission case (${c.mode}, ${c.exportName}, ${c.requests.map((r) => r.kind).join(' ')})`);
      }),
      { numRuns: RUNS, seed: SEED + 1, endOnFailure: true },
    );
  }, 60_000 + RUNS * 200);

  it('has run every case, and the server stayed alive with bounded memory', async () => {
    const rssEnd = rssKiB(server.pid);
    rssMax = Math.max(rssMax, rssEnd);
    console.log(
      `protocol fuzz: ${cases} cases (${RUNS} negotiation, ${RUNS} transmission, 20 warm-up) with a fresh client and canary read after each; ` +
        `0 server crashes; RSS ${Math.round(rssStart / 1024)} MiB after warm-up, ${Math.round(rssEnd / 1024)} MiB at the end, max ${Math.round(rssMax / 1024)} MiB (seed ${SEED})`,
    );
    expect(cases).toBe(2 * RUNS + 20);
    expect(server.process.exitCode).toBeNull();
    // A fuzz case may make the server hold a payload of up to 64 MiB for a moment; nothing may pile up.
    expect(rssEnd).toBeLessThan(rssStart + 96 * 1024);
  });
});
