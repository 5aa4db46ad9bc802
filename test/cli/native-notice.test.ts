/**
 * The optional native addon: where the loader finds it (native/build, from src/ and dist/ alike),
 * the reason it gives when it does not load, and the server's one info line about what its
 * absence costs.
 */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { logNativeStatus } from '../../src/cli/native-notice.js';
import { loadNative, nativeStatus, WITHOUT_NATIVE } from '../../src/io/native.js';
import { spawnServer } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

function capture(): { log: pino.Logger; lines: () => Array<{ level: number; msg: string; reason?: string }> } {
  let text = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      text += chunk.toString();
      done();
    },
  });
  const log = pino({ level: 'debug' }, sink);
  return { log, lines: () => text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { level: number; msg: string; reason?: string }) };
}

describe('native addon status', () => {
  it('loads the addon built by npm install (native/build.mjs) from the source tree', () => {
    const status = nativeStatus({});
    expect(status.loaded, status.loaded ? '' : `${status.reason}; run npm install (it builds native/) with python3, make and g++ present`).toBe(true);
    expect(loadNative({})).not.toBeNull();
  });

  it('says why when it is turned off, and the server logs that once at info with the costs', () => {
    expect(nativeStatus({ STACKBD_NO_NATIVE: '1' })).toEqual({ loaded: false, reason: 'turned off by STACKBD_NO_NATIVE=1' });
    expect(loadNative({ STACKBD_NO_NATIVE: '1' })).toBeNull();
    const off = capture();
    logNativeStatus(off.log, { STACKBD_NO_NATIVE: '1' });
    expect(off.lines()).toHaveLength(1);
    expect(off.lines()[0]).toMatchObject({ level: 30, reason: 'turned off by STACKBD_NO_NATIVE=1' });
    for (const cost of WITHOUT_NATIVE) expect(off.lines()[0].msg).toContain(cost);
    const on = capture();
    logNativeStatus(on.log, {});
    expect(on.lines().map((l) => [l.level, l.msg])).toEqual([[20, 'native fast paths loaded']]);
  });

  it('the real server writes the line once when the addon is off', async () => {
    const dir = await makeTempDir();
    try {
      const server = await spawnServer({ args: ['--demo', '--demo-dir', dir], env: { STACKBD_NO_NATIVE: '1' } });
      try {
        expect(server.logs().split('\n').filter((l) => l.includes('native fast paths not loaded'))).toHaveLength(1);
      } finally {
        expect(await server.stop()).toBe(0);
      }
    } finally {
      await removeDir(dir);
    }
  });
});
