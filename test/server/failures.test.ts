/**
 * Failures are never forgotten (issue 10, item 7): a FLUSH whose sync fails leaves the export
 * dirty for the next sync; an unexpected exception in a request is answered with EIO and
 * logged with the request; error numbers depend on the request's flags as the protocol says.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdErrno, RequestError, toNbdErrno } from '../../src/block/errors.js';
import type { Run } from '../../src/block/runs.js';
import type { Layer, ParentPin, WriteOptions, ZeroOptions } from '../../src/formats/layer.js';
import { openRaw } from '../../src/formats/raw.js';
import { NbdClient, NbdRequestError } from '../../src/nbd/client.js';
import { Export } from '../../src/server/export.js';
import { NbdServer } from '../../src/server/server.js';
import { Stack } from '../../src/stack/stack.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;

/** A layer that passes everything to `inner` but for the faults a test switches on. */
class FaultyLayer implements Layer {
  flushFailures = 0;
  flushCalls = 0;
  /** Writes at this offset throw a TypeError, as a bug would. */
  bugAt = -1;
  zeroError: unknown = null;
  constructor(private readonly inner: Layer) {}
  get path(): string {
    return this.inner.path;
  }
  get format(): Layer['format'] {
    return this.inner.format;
  }
  get blockSize(): number {
    return this.inner.blockSize;
  }
  get size(): number {
    return this.inner.size;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  readonly layerUUID = null;
  readonly parentUUID = null;
  readonly layerType = null;
  pin(): Promise<ParentPin | null> {
    return this.inner.pin();
  }
  map(offset: number, length: number, maxRuns?: number): Promise<Run[]> {
    return this.inner.map(offset, length, maxRuns);
  }
  read(buf: Buffer, offset: number): Promise<void> {
    return this.inner.read(buf, offset);
  }
  write(buf: Buffer, offset: number, options?: WriteOptions): Promise<void> {
    if (offset === this.bugAt) throw new TypeError('a bug: cannot read properties of undefined');
    return this.inner.write(buf, offset, options);
  }
  zero(offset: number, length: number, options?: ZeroOptions): Promise<void> {
    if (this.zeroError) return Promise.reject(this.zeroError);
    return this.inner.zero(offset, length, options);
  }
  discard(offset: number, length: number, options?: WriteOptions): Promise<void> {
    return this.inner.discard(offset, length, options);
  }
  async flush(): Promise<void> {
    this.flushCalls++;
    if (this.flushFailures > 0) {
      this.flushFailures--;
      throw Object.assign(new Error('fdatasync: input/output error'), { code: 'EIO' });
    }
    await this.inner.flush();
  }
  truncate(size: number): Promise<void> {
    return this.inner.truncate(size);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

let dir: string;
let layer: FaultyLayer;
let exp: Export;
let server: NbdServer;
let port: number;
const logLines: string[] = [];

beforeAll(async () => {
  dir = await makeTempDir('stackbd-failures-');
  const file = path.join(dir, 'disk.raw');
  await fs.writeFile(file, Buffer.alloc(4 * MiB));
  layer = new FaultyLayer(await openRaw(file));
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      logLines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  const logger = pino({ level: 'info' }, sink);
  exp = new Export(new Stack([layer]), { name: 'disk', logger });
  server = new NbdServer([exp], { logger });
  port = (await server.listenTcp('127.0.0.1', 0)).port;
});
afterAll(async () => {
  await server.close();
  await removeDir(dir);
});

describe('a failed sync', () => {
  it('leaves the export dirty: the next timer or disconnect sync tries again', async () => {
    await exp.write(Buffer.alloc(4096, 1), 0);
    layer.flushFailures = 1;
    const before = layer.flushCalls;
    await expect(exp.flush()).rejects.toThrow(/input\/output error/);
    await exp.syncIfDirty('timer');
    expect(layer.flushCalls - before).toBe(2);
    // And once it succeeded, nothing is left to do.
    await exp.syncIfDirty('timer');
    expect(layer.flushCalls - before).toBe(2);
  });
});

describe('an unexpected exception in a request', () => {
  it('is answered with EIO and logged with the export, command, offset and length', async () => {
    const c = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port }, { exportName: 'disk' });
    layer.bugAt = 65536;
    const failed = await c.pwrite(Buffer.alloc(8192, 2), 65536).catch((err: unknown) => err);
    expect(failed).toBeInstanceOf(NbdRequestError);
    expect((failed as NbdRequestError).errno).toBe(NbdErrno.EIO);
    // The connection goes on.
    await c.pwrite(Buffer.alloc(512, 3), 0);
    await c.disconnect();
    layer.bugAt = -1;
    const line = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'request failed unexpectedly');
    expect(line).toMatchObject({ export: 'disk', command: 'write', offset: 65536, length: 8192, level: 50 });
    expect(JSON.stringify(line)).toContain('a bug');
  });

  it('a request error the code meant (past the end) is answered without an error log', async () => {
    const before = logLines.length;
    const c = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port }, { exportName: 'disk' });
    await expect(c.pwrite(Buffer.alloc(512), 4 * MiB)).rejects.toBeInstanceOf(NbdRequestError);
    await c.disconnect();
    expect(logLines.slice(before).filter((l) => l.includes('failed unexpectedly'))).toEqual([]);
  });
});

describe('error numbers follow the request flags', () => {
  it('ENOTSUP only for FAST_ZERO, EOVERFLOW only for DF; EINVAL otherwise', () => {
    const enotsup = new RequestError('ENOTSUP', 'no');
    expect(toNbdErrno(enotsup)).toBe(NbdErrno.EINVAL);
    expect(toNbdErrno(enotsup, { fastZero: true })).toBe(NbdErrno.ENOTSUP);
    const system = Object.assign(new Error('operation not supported'), { code: 'EOPNOTSUPP' });
    expect(toNbdErrno(system)).toBe(NbdErrno.EINVAL);
    expect(toNbdErrno(system, { fastZero: true })).toBe(NbdErrno.ENOTSUP);
    const overflow = Object.assign(new Error('too large'), { code: 'EOVERFLOW' });
    expect(toNbdErrno(overflow)).toBe(NbdErrno.EINVAL);
    expect(toNbdErrno(overflow, { df: true })).toBe(NbdErrno.EOVERFLOW);
    expect(toNbdErrno(new TypeError('bug'))).toBe(NbdErrno.EIO);
  });

  it('a WRITE_ZEROES without FAST_ZERO never gets ENOTSUP on the wire', async () => {
    const c = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port }, { exportName: 'disk' });
    layer.zeroError = new RequestError('ENOTSUP', 'cannot zero here');
    const plain = await c.zero(0, 4096).catch((err: unknown) => err);
    const fast = await c.zero(0, 4096, { fast: true }).catch((err: unknown) => err);
    layer.zeroError = null;
    await c.disconnect();
    expect((plain as NbdRequestError).errno).toBe(NbdErrno.EINVAL);
    expect((fast as NbdRequestError).errno).toBe(NbdErrno.ENOTSUP);
  });
});
