/**
 * The NBD client against a hostile server: thousands of seeded mutations of valid negotiation
 * and reply streams, played by a scripted server on a unix socket. Every case must end — each
 * call settles with a result or an NbdClientError — and the process must never see an uncaught
 * exception or an unhandled rejection. After a single mutation of framing bytes only, a call
 * that succeeds must return exactly what the valid conversation returns (payload bytes cannot be
 * checked by any protocol and are not judged). A failing case names its seed and mutations.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdClient, NbdClientError, type BlockStatusExtent } from '../../src/nbd/client.js';
import { seededRandom } from '../formats/helpers/mem-file.js';
import { withTimeLimit } from '../formats/helpers/time-limit.js';
import { useTmpDir } from '../formats/helpers/tmp-dir.js';
import { conversation, EXPORT_SIZE, VARIANTS, type ClientCall, type Conversation } from './helpers/conversations.js';
import { mutateOnce, type Mutation } from './helpers/mutate.js';
import { ScriptedServer } from './helpers/scripted-server.js';

const CASES_PER_VARIANT = 400;
const CASE_LIMIT_MS = 15_000;

type Outcome = { ok: true; value: Buffer | BlockStatusExtent[] | number | string[] | null } | { ok: false; error: unknown };

async function settle<T extends Buffer | BlockStatusExtent[] | number | string[] | null>(work: Promise<T>): Promise<Outcome> {
  try {
    return { ok: true, value: await work };
  } catch (error) {
    return { ok: false, error };
  }
}

async function callOf(client: NbdClient, call: ClientCall): Promise<Buffer | BlockStatusExtent[] | null> {
  switch (call.kind) {
    case 'read':
      // Bytes no chunk covered would show as 0xee instead of data or zeros.
      return client.pread(call.offset, call.length, { into: Buffer.alloc(call.length, 0xee) });
    case 'status':
      return (await client.blockStatus(call.offset, call.length)).get('base:allocation') ?? [];
    case 'write':
      await client.pwrite(Buffer.alloc(call.length, 0x5a), call.offset);
      return null;
    case 'flush':
      await client.flush();
      return null;
  }
}

/** Outcome of connecting (the export size, or the names LISTed), then of each call. */
async function play(conv: Conversation, path: string): Promise<Outcome[]> {
  if (conv.list) return [await settle(NbdClient.list({ kind: 'unix', path }).then((l) => l.map((e) => e.name)))];
  let client: NbdClient;
  try {
    client = await NbdClient.connect({ kind: 'unix', path }, conv.options);
  } catch (error) {
    return [{ ok: false, error }];
  }
  const outcomes = await Promise.all(conv.calls.map((c) => settle(callOf(client, c))));
  client.destroy();
  return [{ ok: true, value: client.size }, ...outcomes];
}

/** What the valid conversation yields: the size (or names), then each call's result. */
function wanted(conv: Conversation): Array<Buffer | BlockStatusExtent[] | number | string[] | null> {
  return conv.list ? [conv.exportNames] : [EXPORT_SIZE, ...conv.expected];
}

/** Problems with one case's outcomes, empty when it behaved. */
function judge(conv: Conversation, outcomes: Outcome[], mutations: Mutation[]): string[] {
  const problems: string[] = [];
  const exact = mutations.length === 0 || (mutations.length === 1 && !mutations[0].touchesPayload);
  const want = wanted(conv);
  outcomes.forEach((o, i) => {
    const label = i === 0 ? (conv.list ? 'LIST' : 'connect') : `${conv.calls[i - 1].kind} #${i}`;
    if (!o.ok) {
      if (!(o.error instanceof NbdClientError)) problems.push(`${label}: untyped error ${String(o.error)}`);
      if (mutations.length === 0) problems.push(`${label} failed without mutation: ${String(o.error)}`);
      return;
    }
    const call = i === 0 ? null : conv.calls[i - 1];
    if (call?.kind === 'read' && (!(o.value instanceof Buffer) || o.value.length !== call.length)) problems.push(`${label}: ${call.length} bytes asked, other returned`);
    if (call?.kind === 'status') {
      const extents = o.value as BlockStatusExtent[];
      const total = extents.reduce((n, e) => n + e.length, 0);
      if (extents.some((e) => e.length <= 0) || total > call.length) problems.push(`${label}: extents ${JSON.stringify(extents)} outside the request`);
    }
    if (exact) {
      try {
        expect(o.value).toEqual(want[i]);
      } catch {
        problems.push(`${label}: returned something else than the valid conversation`);
      }
    }
  });
  return problems;
}

describe('NBD client fuzzed by a hostile scripted server', () => {
  const tmp = useTmpDir('client-fuzz');
  let server: ScriptedServer;
  const escaped: unknown[] = [];
  const record = (err: unknown): void => void escaped.push(err);

  beforeAll(async () => {
    server = await ScriptedServer.start(tmp('fuzz.sock'));
    process.on('uncaughtException', record);
    process.on('unhandledRejection', record);
  });

  afterAll(async () => {
    process.off('uncaughtException', record);
    process.off('unhandledRejection', record);
    await server.close();
  });

  it('gets exactly the expected results from every valid conversation', async () => {
    for (const [v, variant] of VARIANTS.entries()) {
      for (let seed = 1; seed <= 10; seed++) {
        const conv = conversation(variant, seededRandom(seed * 100 + v));
        server.push(conv.steps);
        const outcomes = await withTimeLimit(play(conv, server.path), CASE_LIMIT_MS, `${variant.name}, seed ${seed}`);
        expect(judge(conv, outcomes, []), `${variant.name}, seed ${seed}`).toEqual([]);
      }
    }
    expect(escaped).toEqual([]);
  });

  it.each(VARIANTS.map((v, i) => [v.name, i] as const))(`ends every mutated %s conversation with a result or a typed error (${CASES_PER_VARIANT} seeds)`, async (name, v) => {
    const failures: string[] = [];
    let typedErrors = 0;
    for (let seed = 1; seed <= CASES_PER_VARIANT; seed++) {
      const random = seededRandom(seed * 7919 + v);
      const conv = conversation(VARIANTS[v], random);
      const mutations = Array.from({ length: 1 + Math.floor(random() * 3) }, () => mutateOnce(conv.steps, random));
      server.push(conv.steps);
      const where = `${name}, seed ${seed}: ${mutations.map((m) => m.what).join('; ')}`;
      const outcomes = await withTimeLimit(play(conv, server.path), CASE_LIMIT_MS, where);
      typedErrors += outcomes.filter((o) => !o.ok).length;
      for (const p of judge(conv, outcomes, mutations)) failures.push(`${where}: ${p}`);
    }
    expect(failures).toEqual([]);
    expect(escaped).toEqual([]);
    // The mutations must actually hurt: most cases end in at least one typed error.
    expect(typedErrors).toBeGreaterThan(CASES_PER_VARIANT / 2);
  });
});
