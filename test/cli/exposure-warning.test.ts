/** Writable disks in plain text on a non-loopback address get a warning (issue 10, item 6). */
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { describe, expect, it } from 'vitest';
import { warnIfExposed } from '../../src/cli/exposure-warning.js';
import { isLoopback, parseListenAddress } from '../../src/cli/parse-address.js';
import type { Export } from '../../src/server/export.js';

function capture(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  return { log: pino({ level: 'info' }, sink), lines };
}

const exports = [{ name: 'vm', readOnly: false }, { name: 'iso', readOnly: true }] as unknown as Export[];

describe('warnIfExposed', () => {
  it('warns for writable exports on a non-loopback address without required TLS, naming them', () => {
    const { log, lines } = capture();
    warnIfExposed(log, [parseListenAddress('0.0.0.0:10809'), parseListenAddress('127.0.0.1:10810')], false, exports);
    expect(lines).toHaveLength(1);
    const entry = JSON.parse(lines[0]) as { level: number; addresses: string[]; exports: string[]; msg: string };
    expect(entry).toMatchObject({ level: 40, addresses: ['0.0.0.0:10809'], exports: ['vm'] });
    expect(entry.msg).toMatch(/without TLS/);
  });

  it('stays quiet on loopback, with TLS required, or with read-only exports only', () => {
    const { log, lines } = capture();
    warnIfExposed(log, [parseListenAddress('127.0.0.1:10809'), parseListenAddress('[::1]:10809')], false, exports);
    warnIfExposed(log, [parseListenAddress('[::]:10809')], true, exports);
    warnIfExposed(log, [parseListenAddress('0.0.0.0:10809')], false, [exports[1]]);
    expect(lines).toEqual([]);
    expect(['localhost', '127.0.0.2', '::1'].every(isLoopback)).toBe(true);
    expect(['0.0.0.0', '::', '192.168.1.2'].some(isLoopback)).toBe(false);
  });
});
