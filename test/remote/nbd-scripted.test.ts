/**
 * The nbd:// base against a scripted upstream that misbehaves on purpose: a malformed reply is
 * EIO for that read (the connection stays), ESHUTDOWN and a stream of garbage make the read go
 * again on a new connection, and an upstream error number reaches the stack as that error.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RequestError } from '../../src/block/errors.js';
import { Size } from '../../src/nbd/constants.js';
import { openNbdBase, type NbdBase } from '../../src/remote/nbd.js';
import { useTmpDir } from '../formats/helpers/tmp-dir.js';
import { awaitBytes, chunk, dataChunk, EXPORT_SIZE, negotiation, pattern, send } from '../nbd/helpers/conversations.js';
import { ScriptedServer, type Step } from '../nbd/helpers/scripted-server.js';
import { ReplyType } from '../../src/nbd/constants.js';

const OPTIONS = { exportName: '', metaContexts: ['base:allocation'] };

function errorChunk(cookie: bigint, errno: number, message: string): Step {
  const text = Buffer.from(message);
  const payload = Buffer.alloc(6 + text.length);
  payload.writeUInt32BE(errno, 0);
  payload.writeUInt16BE(text.length, 4);
  text.copy(payload, 6);
  return chunk('structured', cookie, 0, ReplyType.ERROR, true, payload, null);
}

/** A connection that negotiates, waits for `requests` READ headers, then plays `replies`. */
function connection(requests: number, replies: Step[]): Step[] {
  return [...negotiation(OPTIONS, 'structured', ''), awaitBytes(requests * Size.REQUEST), ...replies];
}

describe('nbd:// base on a misbehaving upstream', () => {
  const tmp = useTmpDir('nbd-scripted');
  let server: ScriptedServer;
  let base: NbdBase | null = null;

  beforeAll(async () => {
    server = await ScriptedServer.start(tmp('up.sock'));
  });
  afterEach(async () => {
    await base?.close();
    base = null;
  });
  afterAll(async () => {
    await server.close();
  });

  async function open(): Promise<NbdBase> {
    base = await openNbdBase(`nbd+unix:///?socket=${server.path}`, { connections: 1, backoffBaseMs: 5, retryBudgetMs: 10_000 });
    return base;
  }

  async function read(b: NbdBase, offset: number, length: number): Promise<Buffer | RequestError> {
    const buf = Buffer.alloc(length);
    return b.read(buf, offset).then(
      () => buf,
      (e: unknown) => {
        if (e instanceof RequestError) return e;
        throw e;
      },
    );
  }

  it('fails a read whose reply is malformed with EIO and keeps the connection', async () => {
    server.push(connection(2, [dataChunk('structured', 1n, 0, 8192, 512, true), dataChunk('structured', 2n, 8192, 8192, 4096, true), { kind: 'hold' }]));
    const b = await open();
    expect(b.size).toBe(EXPORT_SIZE);
    const [bad, good] = await Promise.all([read(b, 0, 4096), read(b, 8192, 4096)]);
    expect(bad).toBeInstanceOf(RequestError);
    expect((bad as RequestError).errno).toBe('EIO');
    expect((bad as RequestError).message).toMatch(/a malformed reply from the upstream: .*outside the request/);
    expect(good).toEqual(pattern(8192, 4096));
    expect(b.stats).toMatchObject({ connects: 1, replays: 0, connections: 1 });
  });

  it('passes the upstream error number on: EPERM stays EPERM, an unknown one is EIO', async () => {
    server.push(connection(2, [errorChunk(1n, 1, 'no'), errorChunk(2n, 99, 'odd'), { kind: 'hold' }]));
    const b = await open();
    const [a, c] = await Promise.all([read(b, 0, 512), read(b, 512, 512)]);
    expect((a as RequestError).errno).toBe('EPERM');
    expect((c as RequestError).errno).toBe('EIO');
    expect((c as RequestError).message).toMatch(/the upstream answered error 99: odd/);
  });

  it('reads again on a new connection after ESHUTDOWN, and after a stream of garbage', async () => {
    server.push(connection(1, [errorChunk(1n, 108, 'shutting down'), { kind: 'hold' }]));
    server.push(connection(1, [send(Buffer.alloc(64, 0x42))]));
    server.push(connection(1, [dataChunk('structured', 1n, 4096, 4096, 4096, true), { kind: 'hold' }]));
    const warnings: string[] = [];
    base = await openNbdBase(`nbd+unix:///?socket=${server.path}`, { connections: 1, backoffBaseMs: 5, onWarning: (w) => warnings.push(w) });
    expect(await read(base, 4096, 4096)).toEqual(pattern(4096, 4096));
    expect(base.stats).toMatchObject({ connects: 3, replays: 2 });
    expect(warnings.filter((w) => /lost a connection/.test(w)).length).toBeGreaterThanOrEqual(1);
  });
});
