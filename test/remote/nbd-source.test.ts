/** What an nbd:// spec names: which specs are NBD, the TLS parameters of the URI, the backoff between reconnects. */
import fs from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { parseNbdUri } from '../../src/nbd/uri.js';
import { backoffDelay } from '../../src/remote/backoff.js';
import { isNbdSource, NbdSourceError } from '../../src/remote/nbd.js';
import { resolveNbdSource } from '../../src/remote/nbd-source.js';
import { useTmpDir } from '../formats/helpers/tmp-dir.js';

describe('nbd:// sources', () => {
  const tmp = useTmpDir('nbd-source');

  it('tells NBD specs from file names', () => {
    for (const s of ['nbd://h/e', 'nbds://h:1/e', 'nbd+unix:///e?socket=/s', 'NBDS+UNIX:///?socket=/s']) expect(isNbdSource(s)).toBe(true);
    for (const s of ['disk.asif', '/tmp/nbd://x', 'http://h/e', 'nbd:/x', 'nbdx://h']) expect(isNbdSource(s)).toBe(false);
  });

  it('reads the TLS parameters of nbds:// URIs and refuses them on plaintext ones', () => {
    expect(parseNbdUri('nbds://h:1234/e?tls-certificates=/pki&tls-hostname=n')).toEqual({
      kind: 'tcp',
      host: 'h',
      port: 1234,
      exportName: 'e',
      tls: true,
      tlsCertificates: '/pki',
      tlsHostname: 'n',
    });
    expect(parseNbdUri('nbds+unix:///e?socket=/s&tls-psk-file=/k&tls-username=u')).toMatchObject({ kind: 'unix', path: '/s', tlsPskFile: '/k', tlsUsername: 'u' });
    expect(() => parseNbdUri('nbd://h/e?tls-certificates=/pki')).toThrow(/tls-certificates needs a TLS URI/);
    expect(() => parseNbdUri('nbds://h/e?tls-certificates=/a&tls-psk-file=/b')).toThrow(/not both/);
  });

  it('reads PSK credentials and names the URI when they are missing or wrong', async () => {
    const file = tmp('keys.psk');
    await fs.writeFile(file, 'alice:00112233\nbob:44556677\n');
    const source = await resolveNbdSource(`nbds+unix:///e?socket=/s&tls-psk-file=${file}&tls-username=bob`);
    expect(source.tls).toEqual({ psk: { identity: 'bob', key: Buffer.from('44556677', 'hex') }, servername: 'localhost' });
    const uri = `nbds+unix:///e?socket=/s&tls-psk-file=${file}&tls-username=carol`;
    const err = await resolveNbdSource(uri).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NbdSourceError);
    expect((err as Error).message).toBe(`${uri}: cannot read the TLS credentials: ${file} has no key for identity "carol" (set tls-username=)`);
    await expect(resolveNbdSource('nbd+unix:///e')).rejects.toThrow(/^nbd\+unix:\/\/\/e: a unix URI needs \?socket=PATH$/);
  });

  it('waits longer after each failed attempt, with jitter, up to the cap', () => {
    const b = { baseMs: 100, capMs: 1000 };
    expect(backoffDelay(0, b, () => 0.5)).toBe(0);
    expect([1, 2, 3, 4, 5, 50].map((n) => backoffDelay(n, b, () => 1))).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect([1, 2, 3, 4, 5, 50].map((n) => backoffDelay(n, b, () => 0))).toEqual([50, 100, 200, 400, 500, 500]);
  });
});
