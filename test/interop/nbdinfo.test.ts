/**
 * nbdinfo (libnbd) against the real `stackbd serve`: what a connection reports (size, flags,
 * block sizes, contexts), --list with two exports, --map of base:allocation and
 * qemu:allocation-depth, --json and text output, --size/--can/--is exit codes; over TCP and
 * over a unix socket.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireTool } from '../helpers/require-tool.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { EXPORT_KINDS, prepareExport, type PreparedImage } from './export-kinds.js';
import { releaseExports } from './http-kind.js';
import { contextRuns, mergeRuns } from './layer-model.js';
import {
  KiB,
  MiB,
  Prng,
  describeRun,
  parseNbdinfoMapJson,
  parseNbdinfoMapText,
  randomLayout,
  run,
  startStackbd,
  type ImageLayout,
  type RunResult,
  type Stackbd,
} from './harness.js';

interface NbdinfoExport {
  'export-name': string;
  description?: string;
  uri: string;
  contexts: string[];
  'export-size': number;
  is_read_only: boolean;
  is_rotational: boolean;
  can_cache: boolean;
  can_df: boolean;
  can_fast_zero: boolean;
  can_flush: boolean;
  can_fua: boolean;
  can_multi_conn: boolean;
  can_trim: boolean;
  can_zero: boolean;
  block_size_minimum: number;
  block_size_preferred: number;
  block_size_maximum: number;
}

interface NbdinfoJson {
  protocol: string;
  TLS: boolean;
  structured: boolean;
  exports: NbdinfoExport[];
}

async function nbdinfo(...args: string[]): Promise<RunResult> {
  return run('nbdinfo', args, { timeoutMs: 20_000 });
}

function parseJson(r: RunResult): NbdinfoJson {
  expect(r.code, describeRun(r)).toBe(0);
  return JSON.parse(r.stdout) as NbdinfoJson;
}

// Neither '/' nor '=': the CLI reads NAME=PATH at the first '=', and a '/' before it makes the
// whole argument a bare PATH (src/cli/export-spec.ts).
const ODD_NAME = 'disk één?x&1 y#';
const EXPORT_NAMES = ['disk', 'other', '', ODD_NAME];

describe.each(EXPORT_KINDS)('nbdinfo against a $name export', (kind) => {
  let dir: string;
  let server: Stackbd;
  let socket: string;
  const layouts: Record<string, ImageLayout> = {};
  const images: Record<string, PreparedImage> = {};

  beforeAll(async () => {
    requireTool('nbdinfo');
    dir = await makeTempDir('stackbd-nbdinfo-');
    socket = path.join(dir, 'nbd.sock');
    const rng = new Prng(0x5eed_0001);
    layouts.disk = randomLayout(rng, 64 * MiB, 6, 4 * KiB, 700 * KiB);
    layouts.other = randomLayout(rng, 16 * MiB + 512, 2, 1, 64 * KiB);
    // The default export "" (a bare --export PATH) and a name that must be percent-encoded.
    layouts[''] = randomLayout(rng, 8 * MiB, 2, 1, 64 * KiB);
    layouts[ODD_NAME] = randomLayout(rng, 4 * MiB + 4096, 2, 1, 64 * KiB);
    for (const name of EXPORT_NAMES) {
      const base = name === '' ? 'default' : name === ODD_NAME ? 'odd' : name;
      images[name] = await prepareExport(kind, dir, base, layouts[name]);
    }
    server = await startStackbd({ exports: EXPORT_NAMES.map((name) => ({ name, paths: images[name].paths })), socket });
  });

  afterAll(async () => {
    await server?.stop();
    if (dir) {
      await releaseExports(dir);
      await removeDir(dir);
    }
  });

  function checkExport(e: NbdinfoExport, name: string): void {
    expect(e['export-name']).toBe(name);
    expect(e['export-size']).toBe(layouts[name].size);
    expect(e.description).toBe(images[name].paths.join(' <- '));
    expect(e.is_read_only).toBe(false);
    expect(e.is_rotational).toBe(false);
    expect(e.can_multi_conn).toBe(true);
    expect(e.can_flush).toBe(true);
    expect(e.can_fua).toBe(true);
    expect(e.can_trim).toBe(true);
    expect(e.can_zero).toBe(true);
    expect(e.can_fast_zero).toBe(true);
    expect(e.can_cache).toBe(true);
    expect(e.can_df).toBe(true);
    expect(e.block_size_minimum).toBe(1);
    expect(e.block_size_preferred).toBe(4096);
    expect(e.block_size_maximum).toBe(32 * MiB);
    expect(e.contexts).toEqual(expect.arrayContaining(['base:allocation', 'qemu:allocation-depth']));
  }

  it('reports size, flags and block sizes over TCP (--json)', async () => {
    const info = parseJson(await nbdinfo('--json', server.uri('disk')));
    expect(info.protocol).toBe('newstyle-fixed');
    expect(info.TLS).toBe(false);
    expect(info.structured).toBe(true);
    expect(info.exports).toHaveLength(1);
    checkExport(info.exports[0], 'disk');
    expect(info.exports[0].uri).toBe(server.uri('disk'));
  });

  it('reports the same in its text output', async () => {
    const r = await nbdinfo(server.uri('other'));
    expect(r.code, describeRun(r)).toBe(0);
    const fields = new Map<string, string>();
    for (const line of r.stdout.split('\n')) {
      const m = /^\s+([a-z_-]+): (.*)$/.exec(line);
      if (m) fields.set(m[1], m[2]);
    }
    expect(r.stdout).toContain('protocol: newstyle-fixed without TLS, using structured packets');
    expect(r.stdout).toContain('export="other":');
    expect(fields.get('export-size')).toMatch(new RegExp(`^${layouts.other.size}( |$)`));
    for (const flag of ['can_multi_conn', 'can_fua', 'can_trim', 'can_zero', 'can_fast_zero', 'can_cache', 'can_df', 'can_flush']) {
      expect(fields.get(flag), `${flag} in\n${r.stdout}`).toBe('true');
    }
    expect(fields.get('is_read_only')).toBe('false');
    expect(fields.get('block_size_minimum')).toBe('1');
    expect(fields.get('block_size_preferred')).toBe('4096');
    expect(fields.get('block_size_maximum')).toBe(String(32 * MiB));
  });

  it('connects over the unix socket (nbd+unix:///NAME?socket=PATH)', async () => {
    const uri = server.unixUri('disk');
    const info = parseJson(await nbdinfo('--json', uri));
    expect(info.exports).toHaveLength(1);
    checkExport(info.exports[0], 'disk');
    const size = await nbdinfo('--size', server.unixUri('other'));
    expect(size.code, describeRun(size)).toBe(0);
    expect(size.stdout.trim()).toBe(String(layouts.other.size));
  });

  it('answers --size, --can and --is with the right exit codes', async () => {
    const size = await nbdinfo('--size', server.uri('disk'));
    expect(size.stdout.trim(), describeRun(size)).toBe(String(layouts.disk.size));
    for (const can of ['connect', 'multi-conn', 'fua', 'trim', 'zero', 'fast-zero', 'cache', 'df', 'flush', 'write']) {
      const r = await nbdinfo('--can', can, server.uri('disk'));
      expect(r.code, `--can ${can}\n${describeRun(r)}`).toBe(0);
    }
    for (const is of ['read-only', 'rotational']) {
      const r = await nbdinfo('--is', is, server.uri('disk'));
      expect(r.code, `--is ${is}\n${describeRun(r)}`).toBe(2);
    }
  });

  it('fails on an export that does not exist, naming it', async () => {
    const r = await nbdinfo(server.uri('no-such-export'));
    expect(r.code, describeRun(r)).not.toBe(0);
    expect(r.stderr).toContain('no-such-export');
  });

  it('lists every export with its description (--list), over TCP and the unix socket', async () => {
    for (const uri of [`nbd://127.0.0.1:${server.port}/`, `nbd+unix:///?socket=${socket}`]) {
      const info = parseJson(await nbdinfo('--list', '--json', uri));
      expect(info.exports.map((e) => e['export-name'])).toEqual(EXPORT_NAMES);
      EXPORT_NAMES.forEach((name, i) => checkExport(info.exports[i], name));
    }
    const text = await nbdinfo('--list', `nbd://127.0.0.1:${server.port}`);
    expect(text.code, describeRun(text)).toBe(0);
    expect(text.stdout).toContain('export="disk":');
    expect(text.stdout).toContain('export="other":');
    expect(text.stdout).toContain(`description: ${images.disk.paths.join(' <- ')}`);
    expect(text.stdout).toContain(`description: ${images.other.paths.join(' <- ')}`);
  });

  it('reaches the default export "" with no name in the URI, and a name with spaces, "?", "&", "#" and UTF-8, percent-encoded', async () => {
    for (const uri of [`nbd://127.0.0.1:${server.port}`, `nbd://127.0.0.1:${server.port}/`, `nbd+unix:///?socket=${socket}`]) {
      const info = parseJson(await nbdinfo('--json', uri));
      checkExport(info.exports[0], '');
    }
    const encoded = encodeURIComponent(ODD_NAME);
    expect(encoded).toBe('disk%20%C3%A9%C3%A9n%3Fx%261%20y%23');
    for (const uri of [server.uri(ODD_NAME), `nbd+unix:///${encoded}?socket=${socket}`]) {
      const info = parseJson(await nbdinfo('--json', uri));
      checkExport(info.exports[0], ODD_NAME);
    }
  });

  it('maps base:allocation (--map, text and --json, TCP and unix)', async () => {
    const want = contextRuns(images.disk.extents, 'allocation');
    const json = await nbdinfo('--map', '--json', server.uri('disk'));
    expect(json.code, describeRun(json)).toBe(0);
    expect(mergeRuns(parseNbdinfoMapJson(json.stdout))).toEqual(want);
    const text = await nbdinfo('--map', server.unixUri('disk'));
    expect(text.code, describeRun(text)).toBe(0);
    const entries = parseNbdinfoMapText(text.stdout);
    expect(mergeRuns(entries)).toEqual(want);
    for (const e of entries) expect(e.description).toBe(e.type === 0 ? 'data' : e.type === 3 ? 'hole,zero' : e.type === 2 ? 'zero' : 'hole');
    // The other export is 16 MiB + 512: the map must end exactly at its unaligned size.
    const other = await nbdinfo('--map', '--json', server.uri('other'));
    const last = parseNbdinfoMapJson(other.stdout).at(-1)!;
    expect(last.offset + last.length, describeRun(other)).toBe(layouts.other.size);
  });

  it('maps qemu:allocation-depth (--map=qemu:allocation-depth)', async () => {
    const want = contextRuns(images.disk.extents, 'depth');
    const r = await nbdinfo('--map=qemu:allocation-depth', '--json', server.uri('disk'));
    expect(r.code, describeRun(r)).toBe(0);
    const entries = parseNbdinfoMapJson(r.stdout);
    expect(mergeRuns(entries)).toEqual(want);
    for (const e of entries) {
      // nbdinfo 1.14's words (qemu-nbd --allocation-depth gets the same): 0 is "absent".
      expect(e.description).toBe(e.type === 0 ? 'absent' : e.type === 1 ? 'local' : `backing depth ${e.type}`);
    }
  });

  it('totals the map (--map --totals)', async () => {
    const r = await nbdinfo('--map', '--totals', '--json', server.uri('disk'));
    expect(r.code, describeRun(r)).toBe(0);
    const totals = JSON.parse(r.stdout) as Array<{ type: number; size: number; percent: number }>;
    const sum = totals.reduce((n, t) => n + t.size, 0);
    expect(sum).toBe(layouts.disk.size);
    const dataBytes = images.disk.extents.filter((e) => e.allocation === 0).reduce((n, e) => n + e.length, 0);
    expect(totals.find((t) => t.type === 0)?.size ?? 0).toBe(dataBytes);
  });
});
