import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient, NbdRequestError } from '../../src/nbd/client.js';
import { Command, CommandFlag, Option, OptionReply } from '../../src/nbd/constants.js';
import { encodeInfoRequest, encodeOption } from '../../src/nbd/handshake.js';
import { startInProcessServer, type InProcessServer } from '../helpers/in-process-server.js';
import { RawConnection } from '../helpers/raw-connection.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const SIZE = 4 * 1024 * 1024;

async function errnoOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (err) {
    if (err instanceof NbdRequestError) return err.errno;
    throw err;
  }
  return 0;
}

/** Handshake by hand up to transmission (simple replies) on export `rw`. */
async function rawTransmission(port: number): Promise<RawConnection> {
  const c = await RawConnection.open(port);
  await c.read(18);
  c.write(Buffer.from([0, 0, 0, 3]));
  c.write(encodeOption(Option.GO, encodeInfoRequest({ name: 'rw', infos: [] })));
  for (;;) {
    const h = await c.read(20);
    await c.read(h.readUInt32BE(16));
    if (h.readUInt32BE(12) === OptionReply.ACK) return c;
  }
}

function request(type: number, cookie: bigint, offset: bigint, length: number, flags = 0): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt32BE(0x25609513, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeBigUInt64BE(offset, 16);
  b.writeUInt32BE(length, 24);
  return b;
}

async function stillServes(srv: InProcessServer): Promise<void> {
  const client = await NbdClient.connect(srv.target, { exportName: 'rw' });
  const data = randomBytes(4096);
  await client.pwrite(data, 12288);
  expect((await client.pread(12288, 4096)).equals(data)).toBe(true);
  await client.disconnect();
}

describe('commands and validation', () => {
  let dir: string;
  let srv: InProcessServer;
  let roFile: string;

  beforeAll(async () => {
    dir = await makeTempDir();
    await fs.writeFile(path.join(dir, 'rw.raw'), Buffer.alloc(SIZE));
    roFile = path.join(dir, 'ro.raw');
    await fs.writeFile(roFile, randomBytes(SIZE));
    srv = await startInProcessServer(
      [
        { name: 'rw', rawPath: path.join(dir, 'rw.raw') },
        { name: 'ro', rawPath: roFile, readOnly: true },
      ],
      { maxBytesInFlight: 4 * 1024 * 1024 },
    );
  });
  afterAll(async () => {
    await srv.close();
    await removeDir(dir);
  });

  for (const structured of [false, true]) {
    it(`returns the right error numbers and goes on (${structured ? 'structured' : 'simple'})`, async () => {
      const c = await NbdClient.connect(srv.target, { exportName: 'rw', structuredReplies: structured });
      expect(await errnoOf(c.rawRequest(99, 0, 512, 0))).toBe(22);
      expect(await errnoOf(c.rawRequest(Command.READ, 0, 512, 0x40))).toBe(22);
      expect(await errnoOf(c.pread(SIZE - 512, 1024))).toBe(22);
      expect(await errnoOf(c.pwrite(Buffer.alloc(1024), SIZE - 512))).toBe(28);
      expect(await errnoOf(c.zero(SIZE, 512))).toBe(28);
      expect(await errnoOf(c.trim(SIZE, 512))).toBe(22);
      expect(await errnoOf(c.cache(SIZE - 1, 2))).toBe(22);
      // FAST_ZERO on RAW punches a hole (the native fast paths are built on Linux).
      await c.pwrite(Buffer.alloc(4096, 7), 0);
      expect(await errnoOf(c.zero(0, 4096, { fast: true }))).toBe(0);
      expect((await c.pread(0, 4096)).equals(Buffer.alloc(4096))).toBe(true);
      expect(await errnoOf(c.blockStatus(0, 4096))).toBe(22);
      expect((await c.pread(0, 0)).length).toBe(0);
      await c.pwrite(Buffer.alloc(0), 0);
      await c.zero(100, 0);
      await c.trim(0, 0);
      await c.cache(0, SIZE);
      const data = randomBytes(5000);
      await c.pwrite(data, 777, { fua: true });
      expect((await c.pread(777, 5000)).equals(data)).toBe(true);
      await c.zero(1000, 100, { noHole: true, fua: true });
      data.fill(0, 223, 323);
      expect((await c.pread(777, 5000)).equals(data)).toBe(true);
      await c.trim(0, SIZE);
      await c.flush();
      await c.disconnect();
    });
  }

  it('refuses every write-type command on a read-only export with EPERM and leaves the file alone', async () => {
    const before = await fs.readFile(roFile);
    const c = await NbdClient.connect(srv.target, { exportName: 'ro' });
    expect(c.flags & 0x2).toBe(0x2);
    expect(await errnoOf(c.pwrite(Buffer.alloc(512), 0))).toBe(1);
    expect(await errnoOf(c.zero(0, 512))).toBe(1);
    expect(await errnoOf(c.trim(0, 512))).toBe(1);
    expect((await c.pread(0, 512)).equals(before.subarray(0, 512))).toBe(true);
    await c.flush();
    await c.disconnect();
    expect((await fs.readFile(roFile)).equals(before)).toBe(true);
  });

  it('answers block status for base:allocation, with REQ_ONE, in structured and extended mode', async () => {
    for (const extendedHeaders of [false, true]) {
      const c = await NbdClient.connect(srv.target, { exportName: 'rw', extendedHeaders, metaContexts: ['base:allocation', 'qemu:allocation-depth'] });
      // Data at 64 KiB..128 KiB, a hole (trimmed) right after it.
      await c.pwrite(randomBytes(65536), 65536);
      await c.trim(131072, 65536);
      const status = await c.blockStatus(65536, 131072);
      expect(status.get('base:allocation')).toEqual([
        { length: 65536, flags: 0 },
        { length: 65536, flags: 3 },
      ]);
      expect(status.get('qemu:allocation-depth')).toEqual([{ length: 131072, flags: 1 }]);
      const one = await c.blockStatus(65536, 131072, { reqOne: true });
      expect(one.get('base:allocation')).toEqual([{ length: 65536, flags: 0 }]);
      await c.disconnect();
    }
  });

  it('reads with DF and with holes in structured mode', async () => {
    const c = await NbdClient.connect(srv.target, { exportName: 'rw' });
    const data = randomBytes(8192);
    await c.pwrite(data, 0);
    expect((await c.pread(0, 8192, { df: true })).equals(data)).toBe(true);
    await c.disconnect();
  });

  it('consumes the payload of a rejected write and stays in step', async () => {
    const c = await NbdClient.connect(srv.target, { exportName: 'rw' });
    const payload = Buffer.alloc(8192, 0x5a);
    expect(await errnoOf(c.pwrite(payload, SIZE - 4096))).toBe(28);
    expect(await errnoOf(c.rawRequest(Command.WRITE, 0, payload.length, CommandFlag.DF, payload))).toBe(22);
    const data = randomBytes(512);
    await c.pwrite(data, 0);
    expect((await c.pread(0, 512)).equals(data)).toBe(true);
    await c.disconnect();
  });

  it('rejects offset + length that overflows 64 bits with EINVAL', async () => {
    const c = await rawTransmission(srv.port);
    c.write(request(Command.READ, 1n, 0xffffffffffffff00n, 0x1000));
    const reply = await c.read(16);
    expect(reply.readUInt32BE(4)).toBe(22);
    c.write(request(Command.WRITE, 2n, 0xfffffffffffffe00n, 512), Buffer.alloc(512));
    expect((await c.read(16)).readUInt32BE(4)).toBe(28);
    c.destroy();
    await stillServes(srv);
  });

  it('closes on a bad request magic and keeps serving others', async () => {
    const c = await rawTransmission(srv.port);
    c.write(Buffer.alloc(28, 0x11));
    expect(await c.closedWithin(2000)).toBe(true);
    await stillServes(srv);
  });

  it('survives a request header cut in half and a client reset with 32 requests in flight', async () => {
    const half = await rawTransmission(srv.port);
    half.write(request(Command.READ, 1n, 0n, 512).subarray(0, 14));
    await new Promise((r) => setTimeout(r, 50));
    half.destroy();

    const busy = await rawTransmission(srv.port);
    for (let i = 0; i < 32; i++) busy.write(request(Command.READ, BigInt(i), BigInt(i * 65536), 65536));
    busy.socket.resetAndDestroy();
    await stillServes(srv);
  });

  it('survives a client that vanishes while large replies are being written', async () => {
    for (let round = 0; round < 3; round++) {
      const c = await rawTransmission(srv.port);
      for (let i = 0; i < 64; i++) c.write(request(Command.READ, BigInt(i), 0n, 1024 * 1024));
      await new Promise((r) => setTimeout(r, 5 + round * 20));
      c.destroy();
    }
    await stillServes(srv);
  });

  it('keeps working above the bytes-in-flight cap (the socket is paused, then resumed)', async () => {
    const c = await NbdClient.connect(srv.target, { exportName: 'rw' });
    const writes = [];
    const model = Buffer.alloc(SIZE);
    for (let i = 0; i < 32; i++) {
      const data = randomBytes(128 * 1024);
      data.copy(model, i * 128 * 1024);
      writes.push(c.pwrite(data, i * 128 * 1024));
    }
    await Promise.all(writes);
    const reads = [];
    for (let i = 0; i < 32; i++) reads.push(c.pread(i * 128 * 1024, 128 * 1024));
    expect(Buffer.concat(await Promise.all(reads)).equals(model)).toBe(true);
    await c.disconnect();
  });
});
