/**
 * One scripted fault at a time, and exactly what the client makes of it: a fault inside one
 * reply fails that request (NbdProtocolError or NbdRequestError) while the other request on the
 * same connection succeeds; a stream that cannot be framed any more closes the connection and
 * fails every request in flight (NbdConnectionError); a fault during negotiation rejects the
 * connect with a typed error.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient, NbdConnectionError, NbdProtocolError, NbdRequestError, type ClientOptions } from '../../src/nbd/client.js';
import { encodeSimpleReply, writeChunkHeader, type ReplyMode } from '../../src/nbd/codec.js';
import { Option, OptionReply, ReplyType, Size } from '../../src/nbd/constants.js';
import { encodeGreeting, encodeInfoBlockSize, encodeInfoExport } from '../../src/nbd/handshake.js';
import { useTmpDir } from '../formats/helpers/tmp-dir.js';
import {
  awaitBytes,
  chunk,
  dataChunk,
  EXPORT_FLAGS,
  EXPORT_SIZE,
  holeChunk,
  negotiation,
  optionReply,
  pattern,
  send,
  statusChunk,
} from './helpers/conversations.js';
import { ScriptedServer, type Step } from './helpers/scripted-server.js';

const STRUCTURED: ClientOptions = { exportName: 'disk', metaContexts: ['base:allocation'] };
const A = { offset: 0, length: 4096 };
const B = { offset: 8192, length: 4096 };

type Result = { ok: true; value: unknown } | { ok: false; error: unknown };

const settle = (p: Promise<unknown>): Promise<Result> =>
  p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );

function errorOf(r: Result): unknown {
  if (r.ok) throw new Error(`expected a failure, got ${String(r.value)}`);
  return r.error;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

describe('NBD client facing a broken server', () => {
  const tmp = useTmpDir('client-hardening');
  let server: ScriptedServer;
  const target = (): { kind: 'unix'; path: string } => ({ kind: 'unix', path: server.path });

  beforeAll(async () => {
    server = await ScriptedServer.start(tmp('hardening.sock'));
  });
  afterAll(async () => {
    await server.close();
  });

  /** Negotiates in `mode`, sends two READs (A then B, cookies 1 and 2), then plays `replies`. */
  async function twoReads(replies: Step[], mode: ReplyMode = 'structured', options: ClientOptions = STRUCTURED): Promise<[Result, Result, NbdClient]> {
    const header = mode === 'extended' ? Size.EXTENDED_REQUEST : Size.REQUEST;
    server.push([...negotiation(options, mode, 'disk'), awaitBytes(2 * header), ...replies]);
    const client = await NbdClient.connect(target(), options);
    const results = await Promise.all([settle(client.pread(A.offset, A.length)), settle(client.pread(B.offset, B.length))]);
    client.destroy();
    return [results[0], results[1], client];
  }

  const goodB = (): Step => dataChunk('structured', 2n, B.offset, B.offset, B.length, true);

  function expectRequestFault(r: Result, text: RegExp): void {
    const err = errorOf(r);
    expect(err).toBeInstanceOf(NbdProtocolError);
    expect((err as Error).message).toMatch(text);
  }

  function expectConnectionFault(r: Result, text: RegExp): void {
    const err = errorOf(r);
    expect(err).toBeInstanceOf(NbdConnectionError);
    expect((err as Error).message).toMatch(text);
  }

  it('plays a valid exchange: chunks in any order, holes read as zeros', async () => {
    const [a, b] = await twoReads([
      goodB(),
      dataChunk('structured', 1n, 0, 2048, 2048, false),
      holeChunk('structured', 1n, 0, 1024, 1024, false),
      dataChunk('structured', 1n, 0, 0, 1024, true),
    ]);
    const want = pattern(0, 4096).fill(0, 1024, 2048);
    expect(a).toEqual({ ok: true, value: want });
    expect(b).toEqual({ ok: true, value: pattern(B.offset, B.length) });
  });

  it('fails only the request whose data chunk lies outside it', async () => {
    const [a, b] = await twoReads([dataChunk('structured', 1n, 0, 4096, 512, false), chunk('structured', 1n, 0, ReplyType.NONE, true, Buffer.alloc(0), null), goodB()]);
    expectRequestFault(a, /outside the request/);
    expect(b.ok).toBe(true);
  });

  it('fails only the request whose chunks overlap', async () => {
    const [a, b] = await twoReads([dataChunk('structured', 1n, 0, 0, 2048, false), dataChunk('structured', 1n, 0, 1024, 3072, true), goodB()]);
    expectRequestFault(a, /overlaps an earlier chunk/);
    expect(b.ok).toBe(true);
  });

  it('fails a read that DONE ends before every byte was covered', async () => {
    const [a, b] = await twoReads([dataChunk('structured', 1n, 0, 0, 2048, true), goodB()]);
    expectRequestFault(a, /DONE after 2048 of 4096 bytes/);
    expect(b.ok).toBe(true);
  });

  it('fails a hole of size 0, or outside the request', async () => {
    const [a, b] = await twoReads([holeChunk('structured', 1n, 0, 0, 0, true), holeChunk('structured', 2n, B.offset, B.offset, 8192, true)]);
    expectRequestFault(a, /size 0/);
    expectRequestFault(b, /outside the request/);
  });

  it('fails only the request with an unknown chunk type; an unknown error type is that error', async () => {
    const unknownError = Buffer.concat([u32(5), Buffer.from([0, 3]), Buffer.from('bad')]);
    const [a, b] = await twoReads([chunk('structured', 1n, 0, 77, true, Buffer.alloc(4), null), chunk('structured', 2n, B.offset, 0x8077, true, unknownError, null)]);
    expectRequestFault(a, /unknown chunk type 77/);
    const err = errorOf(b);
    expect(err).toBeInstanceOf(NbdRequestError);
    expect((err as NbdRequestError).errno).toBe(5);
    expect((err as Error).message).toBe('bad');
  });

  it('fails the request whose error chunk has a message longer than the chunk, or error 0', async () => {
    const tooLong = Buffer.concat([u32(5), Buffer.from([0, 200]), Buffer.from('short')]);
    const zero = Buffer.concat([u32(0), Buffer.from([0, 0])]);
    const [a, b] = await twoReads([chunk('structured', 1n, 0, ReplyType.ERROR, true, tooLong, null), chunk('structured', 2n, B.offset, ReplyType.ERROR, true, zero, null)]);
    expectRequestFault(a, /message of 200 bytes does not fit/);
    expectRequestFault(b, /error number 0/);
  });

  it('closes the connection on a data chunk longer than the request could need', async () => {
    const [a, b] = await twoReads([dataChunk('structured', 1n, 0, 0, 4097, true)]);
    expectConnectionFault(a, /more than the 4104 it can need/);
    expectConnectionFault(b, /more than the 4104 it can need/);
  });

  it('closes the connection on a bad magic and on a cookie nobody sent', async () => {
    const badMagic = send(Buffer.alloc(20, 0x41));
    let [a, b] = await twoReads([goodB(), badMagic]);
    expect(b.ok).toBe(true);
    expectConnectionFault(a, /bad reply magic 0x41414141/);
    [a, b] = await twoReads([dataChunk('structured', 99n, 0, 0, 4096, true)]);
    expectConnectionFault(a, /cookie 99, which no request in flight has/);
    expectConnectionFault(b, /cookie 99/);
  });

  it('closes the connection on a cookie answered twice, after the first answer was delivered', async () => {
    const first = dataChunk('structured', 1n, 0, 0, 4096, true);
    const [a, b] = await twoReads([first, first]);
    expect(a.ok).toBe(true);
    expectConnectionFault(b, /cookie 1, which no request in flight has \(unknown, or answered already\)/);
  });

  it('closes the connection on a simple reply to a READ in structured mode', async () => {
    const [a] = await twoReads([send(encodeSimpleReply(1n, 0))]);
    expectConnectionFault(a, /simple reply to READ at 0\+4096 in structured mode/);
  });

  it('closes the connection on a reply header of a mode that was not negotiated', async () => {
    let [a] = await twoReads([dataChunk('structured', 1n, 0, 0, 4096, true)], 'simple', { exportName: 'disk', structuredReplies: false });
    expectConnectionFault(a, /a structured reply header, but simple replies were negotiated/);
    [a] = await twoReads([dataChunk('extended', 1n, 0, 0, 4096, true)]);
    expectConnectionFault(a, /an extended reply header, but structured replies were negotiated/);
  });

  describe('block status', () => {
    async function status(replies: Step[], length = 65536, mode: ReplyMode = 'structured'): Promise<[Result, Result]> {
      const options = mode === 'extended' ? { ...STRUCTURED, extendedHeaders: true } : STRUCTURED;
      const header = mode === 'extended' ? Size.EXTENDED_REQUEST : Size.REQUEST;
      server.push([...negotiation(options, mode, 'disk'), awaitBytes(2 * header), ...replies]);
      const client = await NbdClient.connect(target(), options);
      const results = await Promise.all([settle(client.blockStatus(0, length)), settle(client.blockStatus(length, length))]);
      client.destroy();
      return [results[0], results[1]];
    }
    const done = (cookie: bigint, at: number): Step => chunk('structured', cookie, at, ReplyType.NONE, true, Buffer.alloc(0), null);

    it('cuts a last extent that runs past the request, refuses extents that start past it', async () => {
      const [a, b] = await status([
        statusChunk('structured', 1n, 0, [{ length: 4096, flags: 0 }, { length: 1 << 20, flags: 3 }], true),
        statusChunk('structured', 2n, 65536, [{ length: 65536, flags: 0 }, { length: 512, flags: 3 }], true),
      ]);
      expect(a).toEqual({ ok: true, value: new Map([['base:allocation', [{ length: 4096, flags: 0 }, { length: 61440, flags: 3 }]]]) });
      expectRequestFault(b, /extents past the end of the request/);
    });

    it('refuses status for a context that was not selected, twice for one context, or none at all', async () => {
      const other = chunk('structured', 1n, 0, ReplyType.BLOCK_STATUS, true, Buffer.concat([u32(8), u32(512), u32(0)]), null);
      let [a, b] = await status([other, statusChunk('structured', 2n, 65536, [{ length: 512, flags: 0 }], false), statusChunk('structured', 2n, 65536, [{ length: 512, flags: 0 }], true)]);
      expectRequestFault(a, /context id 8, which was not selected/);
      expectRequestFault(b, /a second block status chunk for context id 7/);
      [a, b] = await status([done(1n, 0), statusChunk('structured', 2n, 65536, [{ length: 512, flags: 0 }], true)]);
      expectRequestFault(a, /DONE without block status for context id 7/);
      expect(b.ok).toBe(true);
    });

    it('refuses a compact status chunk with extended headers, a ragged one, and extents of length 0', async () => {
      const [a, b] = await status(
        [
          chunk('extended', 1n, 0, ReplyType.BLOCK_STATUS, true, Buffer.concat([u32(7), u32(512), u32(0)]), null),
          statusChunk('extended', 2n, 65536, [{ length: 0, flags: 0 }], true),
        ],
        65536,
        'extended',
      );
      expectRequestFault(a, /compact BLOCK_STATUS chunk with extended headers/);
      expectRequestFault(b, /extent of length 0/);
      const ragged = chunk('structured', 1n, 0, ReplyType.BLOCK_STATUS, true, Buffer.concat([u32(7), u32(512)]), null);
      const [c] = await status([ragged, statusChunk('structured', 2n, 65536, [{ length: 512, flags: 0 }], true)]);
      expectRequestFault(c, /does not hold a whole number/);
    });
  });

  describe('negotiation', () => {
    /** Greeting and structured replies; then `replies` once the next option has come. */
    const go = (replies: Step[]): Step[] => [
      send(encodeGreeting()),
      awaitBytes(4),
      awaitBytes(Size.OPTION_HEADER),
      optionReply(Option.STRUCTURED_REPLY, OptionReply.ACK),
      awaitBytes(1),
      ...replies,
    ];
    const info = (data: Buffer): Step => optionReply(Option.GO, OptionReply.INFO, data);

    async function refused(script: Step[], text: RegExp, options: ClientOptions = { exportName: 'disk' }): Promise<void> {
      server.push(script);
      const err = await NbdClient.connect(target(), options).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(NbdProtocolError);
      expect((err as Error).message).toMatch(text);
    }

    it('refuses an option reply of absurd length without reading it', async () => {
      const header = Buffer.alloc(20);
      header.writeBigUInt64BE(0x0003e889045565a9n, 0);
      header.writeUInt32BE(Option.GO, 8);
      header.writeUInt32BE(OptionReply.INFO, 12);
      header.writeUInt32BE(0xffffffff, 16);
      await refused(go([send(header)]), /option reply of 4294967295 bytes/);
    });

    it('refuses a reply to another option, a reply type the option does not take, an ACK with data', async () => {
      await refused(go([optionReply(Option.INFO, OptionReply.ACK)]), /a reply to option 6 while option 7 was asked/);
      await refused(go([optionReply(Option.GO, OptionReply.SERVER, Buffer.alloc(8))]), /a reply of type 2 to option 7/);
      await refused(go([optionReply(Option.GO, OptionReply.ACK, Buffer.alloc(3))]), /an ACK with 3 bytes of data/);
    });

    it('refuses INFO replies that are too short, and a GO without INFO_EXPORT', async () => {
      await refused(go([info(encodeInfoExport(EXPORT_SIZE, EXPORT_FLAGS).subarray(0, 11))]), /INFO_EXPORT of 11 bytes/);
      await refused(go([info(Buffer.from([0]))]), /shorter than 2 bytes/);
      await refused(go([info(encodeInfoBlockSize({ minimum: 512, preferred: 4096, maximum: 1 << 20 }).subarray(0, 10))]), /INFO_BLOCK_SIZE of 10 bytes/);
      await refused(go([optionReply(Option.GO, OptionReply.ACK)]), /without INFO_EXPORT/);
    });

    it('refuses an export whose size or flags change between replies, and impossible block sizes', async () => {
      await refused(go([info(encodeInfoExport(EXPORT_SIZE, EXPORT_FLAGS)), info(encodeInfoExport(EXPORT_SIZE * 2, EXPORT_FLAGS))]), /changed from 1048576 bytes/);
      await refused(go([info(encodeInfoBlockSize({ minimum: 3, preferred: 4096, maximum: 1 << 20 }))]), /minimum block size 3/);
      await refused(go([info(encodeInfoBlockSize({ minimum: 512, preferred: 4096, maximum: 1000 }))]), /maximum payload 1000/);
      await refused(go([info(encodeInfoExport(EXPORT_SIZE, 0)), optionReply(Option.GO, OptionReply.ACK)]), /without HAS_FLAGS/);
    });

    it('refuses a metadata context it did not ask for, and one id given twice', async () => {
      const ctx = (id: number, name: string): Step => optionReply(Option.SET_META_CONTEXT, OptionReply.META_CONTEXT, Buffer.concat([u32(id), Buffer.from(name)]));
      await refused(go([ctx(1, 'qemu:dirty-bitmap:x')]), /"qemu:dirty-bitmap:x" was not asked for/, STRUCTURED);
      await refused(go([ctx(1, 'base:allocation'), ctx(1, 'base:allocation')]), /context id 1 given twice/, STRUCTURED);
    });

    it('refuses a server that is not fixed newstyle, and gives up on one that stops answering', async () => {
      const greeting = encodeGreeting();
      greeting.writeUInt16BE(0, 16);
      await refused([send(greeting)], /fixed newstyle/);
      server.push([send(encodeGreeting()), awaitBytes(4), { kind: 'hold' }]);
      const err = await NbdClient.connect(target(), { exportName: 'disk', timeoutMs: 300 }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(NbdConnectionError);
      expect((err as Error).message).toMatch(/no answer within 300 ms/);
    });

    it('rejects the connect with a connection error when the server hangs up mid-negotiation', async () => {
      server.push([send(encodeGreeting().subarray(0, 10))]);
      const err = await NbdClient.connect(target(), { exportName: 'disk' }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(NbdConnectionError);
      expect((err as Error).message).toMatch(/connection closed/);
    });
  });

  it('stops reading a server that floods one option with replies', async () => {
    // 5000 INFO replies of a valid shape and no ACK: more than the cap on replies to one option.
    const flood = Buffer.concat(Array.from({ length: 5000 }, () => optionReplyBytes(Option.GO, OptionReply.INFO, encodeInfoExport(EXPORT_SIZE, EXPORT_FLAGS))));
    server.push([send(encodeGreeting()), awaitBytes(4), awaitBytes(Size.OPTION_HEADER), optionReply(Option.STRUCTURED_REPLY, OptionReply.ACK), awaitBytes(1), send(flood)]);
    const err = await NbdClient.connect(target(), { exportName: 'disk' }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NbdProtocolError);
    expect((err as Error).message).toMatch(/more than 4096 replies to option 7/);
  });

  it('reads extended replies with their 64-bit lengths', async () => {
    const options = { ...STRUCTURED, extendedHeaders: true };
    const ext = (cookie: bigint, offset: number, length: number): Step => {
      const head = Buffer.alloc(Size.EXTENDED_REPLY);
      writeChunkHeader(head, 0, 'extended', { flags: 1, type: ReplyType.OFFSET_DATA, cookie, requestOffset: offset, length: length + 8 });
      return send(Buffer.concat([head, u64(offset), pattern(offset, length)]));
    };
    const [a, b] = await twoReads([ext(2n, B.offset, B.length), ext(1n, A.offset, A.length)], 'extended', options);
    expect(a).toEqual({ ok: true, value: pattern(A.offset, A.length) });
    expect(b).toEqual({ ok: true, value: pattern(B.offset, B.length) });
  });
});

function optionReplyBytes(option: number, type: number, data: Buffer): Buffer {
  const step = optionReply(option, type, data);
  if (step.kind !== 'send') throw new Error('not a send step');
  return step.bytes;
}
