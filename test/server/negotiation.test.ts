import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient, NbdOptionError } from '../../src/nbd/client.js';
import { Info, Option, OptionReply, TransmissionFlag } from '../../src/nbd/constants.js';
import { encodeInfoRequest, encodeMetaContextRequest, encodeOption } from '../../src/nbd/handshake.js';
import { startInProcessServer, type InProcessServer } from '../helpers/in-process-server.js';
import { RawConnection } from '../helpers/raw-connection.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

interface Reply {
  option: number;
  type: number;
  data: Buffer;
}

async function readReply(c: RawConnection): Promise<Reply> {
  const h = await c.read(20);
  expect(h.readBigUInt64BE(0)).toBe(0x0003e889045565a9n);
  const length = h.readUInt32BE(16);
  return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await c.read(length) };
}

/** Reads replies up to and including the final ACK or error. */
async function readReplies(c: RawConnection): Promise<Reply[]> {
  const out: Reply[] = [];
  for (;;) {
    const r = await readReply(c);
    out.push(r);
    if (r.type === OptionReply.ACK || r.type & 0x80000000) return out;
  }
}

async function greet(c: RawConnection, clientFlags = 3): Promise<number> {
  const greeting = await c.read(18);
  expect(greeting.subarray(0, 16).toString('latin1')).toBe('NBDMAGICIHAVEOPT');
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(clientFlags, 0);
  c.write(flags);
  return greeting.readUInt16BE(16);
}

describe('negotiation', () => {
  let dir: string;
  let srv: InProcessServer;

  beforeAll(async () => {
    dir = await makeTempDir();
    for (const [name, size] of [
      ['a.raw', 1 << 20],
      ['b.raw', 2 << 20],
    ] as const) {
      await fs.writeFile(path.join(dir, name), Buffer.alloc(size));
    }
    srv = await startInProcessServer([
      { name: 'a', rawPath: path.join(dir, 'a.raw'), description: 'first disk' },
      { name: 'b', rawPath: path.join(dir, 'b.raw'), readOnly: true },
      { name: '', rawPath: path.join(dir, 'a.raw'), readOnly: true },
    ]);
  });
  afterAll(async () => {
    await srv.close();
    await removeDir(dir);
  });

  it('answers unknown options with ERR_UNSUP and keeps the stream in step', async () => {
    const c = await RawConnection.open(srv.port);
    await greet(c);
    c.write(encodeOption(99, Buffer.from('some payload the server must skip')));
    expect(await readReplies(c)).toEqual([{ option: 99, type: OptionReply.ERR_UNSUP, data: expect.any(Buffer) }]);
    c.write(encodeOption(Option.STARTTLS));
    expect((await readReplies(c))[0].type).toBe(OptionReply.ERR_UNSUP);
    c.write(encodeOption(Option.STRUCTURED_REPLY));
    expect((await readReplies(c)).map((r) => r.type)).toEqual([OptionReply.ACK]);
    c.write(encodeOption(Option.STRUCTURED_REPLY));
    expect((await readReplies(c)).map((r) => r.type)).toEqual([OptionReply.ERR_INVALID]);
    c.write(encodeOption(Option.STRUCTURED_REPLY, Buffer.from('x')));
    expect((await readReplies(c)).map((r) => r.type)).toEqual([OptionReply.ERR_INVALID]);
    c.write(encodeOption(Option.ABORT));
    expect((await readReplies(c)).map((r) => r.type)).toEqual([OptionReply.ACK]);
    expect(await c.closedWithin(2000)).toBe(true);
  });

  it('lists exports with descriptions, and refuses LIST with data', async () => {
    const c = await RawConnection.open(srv.port);
    await greet(c);
    c.write(encodeOption(Option.LIST));
    const replies = await readReplies(c);
    expect(replies.at(-1)!.type).toBe(OptionReply.ACK);
    const servers = replies
      .filter((r) => r.type === OptionReply.SERVER)
      .map((r) => {
        const len = r.data.readUInt32BE(0);
        return [r.data.toString('utf8', 4, 4 + len), r.data.toString('utf8', 4 + len)];
      });
    expect(servers).toContainEqual(['a', 'first disk']);
    expect(servers.map((s) => s[0]).sort()).toEqual(['', 'a', 'b']);
    c.write(encodeOption(Option.LIST, Buffer.from('zz')));
    expect((await readReplies(c))[0].type).toBe(OptionReply.ERR_INVALID);
    c.destroy();
  });

  it('answers INFO then GO with EXPORT, BLOCK_SIZE, NAME and DESCRIPTION', async () => {
    const c = await RawConnection.open(srv.port);
    await greet(c);
    c.write(encodeOption(Option.INFO, encodeInfoRequest({ name: 'a', infos: [Info.NAME, Info.DESCRIPTION] })));
    const info = await readReplies(c);
    expect(info.map((r) => [r.type, r.type === OptionReply.INFO ? r.data.readUInt16BE(0) : -1])).toEqual([
      [OptionReply.INFO, Info.EXPORT],
      [OptionReply.INFO, Info.BLOCK_SIZE],
      [OptionReply.INFO, Info.NAME],
      [OptionReply.INFO, Info.DESCRIPTION],
      [OptionReply.ACK, -1],
    ]);
    expect(Number(info[0].data.readBigUInt64BE(2))).toBe(1 << 20);
    c.write(encodeOption(Option.INFO, encodeInfoRequest({ name: 'nope', infos: [] })));
    expect((await readReplies(c)).map((r) => r.type)).toEqual([OptionReply.ERR_UNKNOWN]);
    c.write(encodeOption(Option.GO, Buffer.from([0, 0, 0, 9, 0x61])));
    expect((await readReplies(c)).map((r) => r.type)).toEqual([OptionReply.ERR_INVALID]);
    c.write(encodeOption(Option.GO, encodeInfoRequest({ name: 'a', infos: [] })));
    const go = await readReplies(c);
    expect(go.at(-1)!.type).toBe(OptionReply.ACK);
    // Transmission: a simple read of 512 bytes.
    const req = Buffer.alloc(28);
    req.writeUInt32BE(0x25609513, 0);
    req.writeBigUInt64BE(77n, 8);
    req.writeUInt32BE(512, 24);
    c.write(req);
    const reply = await c.read(16 + 512);
    expect(reply.readUInt32BE(0)).toBe(0x67446698);
    expect(reply.readUInt32BE(4)).toBe(0);
    expect(reply.readBigUInt64BE(8)).toBe(77n);
    c.destroy();
  });

  it('negotiates metadata contexts: listing with wildcards, selecting exact names', async () => {
    const c = await RawConnection.open(srv.port);
    await greet(c);
    c.write(encodeOption(Option.SET_META_CONTEXT, encodeMetaContextRequest({ name: 'a', queries: ['base:allocation'] })));
    expect((await readReplies(c)).map((r) => r.type)).toEqual([OptionReply.ERR_INVALID]);
    c.write(encodeOption(Option.STRUCTURED_REPLY));
    await readReplies(c);
    c.write(encodeOption(Option.LIST_META_CONTEXT, encodeMetaContextRequest({ name: 'a', queries: [] })));
    const all = await readReplies(c);
    expect(all.filter((r) => r.type === OptionReply.META_CONTEXT).map((r) => r.data.toString('utf8', 4))).toEqual([
      'base:allocation',
      'qemu:allocation-depth',
    ]);
    c.write(encodeOption(Option.LIST_META_CONTEXT, encodeMetaContextRequest({ name: 'a', queries: ['base:', 'other:thing'] })));
    const base = await readReplies(c);
    expect(base.filter((r) => r.type === OptionReply.META_CONTEXT).map((r) => r.data.toString('utf8', 4))).toEqual(['base:allocation']);
    c.write(encodeOption(Option.SET_META_CONTEXT, encodeMetaContextRequest({ name: 'a', queries: ['base:allocation', 'x-unknown:y'] })));
    const set = await readReplies(c);
    expect(set.map((r) => r.type)).toEqual([OptionReply.META_CONTEXT, OptionReply.ACK]);
    expect(set[0].data.readUInt32BE(0)).not.toBe(0);
    c.destroy();
  });

  it('serves EXPORT_NAME with and without NO_ZEROES, and closes on an unknown name', async () => {
    for (const clientFlags of [1, 3]) {
      const c = await RawConnection.open(srv.port);
      await greet(c, clientFlags);
      c.write(encodeOption(Option.EXPORT_NAME, Buffer.from('b')));
      const reply = await c.read(clientFlags === 3 ? 10 : 134);
      expect(Number(reply.readBigUInt64BE(0))).toBe(2 << 20);
      expect(reply.readUInt16BE(8) & TransmissionFlag.READ_ONLY).toBe(TransmissionFlag.READ_ONLY);
      c.destroy();
    }
    const bad = await RawConnection.open(srv.port);
    await greet(bad);
    bad.write(encodeOption(Option.EXPORT_NAME, Buffer.from('missing')));
    expect(await bad.closedWithin(2000)).toBe(true);
  });

  it('closes on unknown client flags, bad option magic and a 4 GiB option at once', async () => {
    const flags = await RawConnection.open(srv.port);
    await greet(flags, 0x80);
    expect(await flags.closedWithin(2000)).toBe(true);

    const magic = await RawConnection.open(srv.port);
    await greet(magic);
    magic.write(Buffer.alloc(16, 0x41));
    expect(await magic.closedWithin(2000)).toBe(true);

    const huge = await RawConnection.open(srv.port);
    await greet(huge);
    const header = encodeOption(Option.INFO);
    header.writeUInt32BE(0xffffffff, 12);
    huge.write(header);
    expect(await huge.closedWithin(2000)).toBe(true);

    // The server still serves.
    const client = await NbdClient.connect(srv.target, { exportName: 'a' });
    expect((await client.pread(0, 512)).length).toBe(512);
    await client.disconnect();
  });

  it('refuses GO for an unknown export with ERR_UNKNOWN through the client', async () => {
    await expect(NbdClient.connect(srv.target, { exportName: 'zzz' })).rejects.toBeInstanceOf(NbdOptionError);
  });

  it('uses the default export for an empty name and reports identical flags on every connection', async () => {
    const one = await NbdClient.connect(srv.target, { exportName: '', infoBeforeGo: true });
    const two = await NbdClient.connect(srv.target, { exportName: '' });
    expect(one.size).toBe(1 << 20);
    expect(one.flags).toBe(two.flags);
    await Promise.all([one.disconnect(), two.disconnect()]);
  });
});
