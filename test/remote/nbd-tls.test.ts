/**
 * nbds:// bases on nbdkit --tls=require: X.509 (the server checked against the CA and its name,
 * a client certificate presented) over TCP and a unix socket, a pre-shared key, and the
 * refusals: plaintext to a TLS-only upstream, a server name the certificate does not carry.
 */
import fs from 'node:fs/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openNbdBase, type NbdBase } from '../../src/remote/nbd.js';
import { useTmpDir } from '../formats/helpers/tmp-dir.js';
import { requireTool } from '../helpers/require-tool.js';
import { makeTlsFixtures, type TlsFixtures } from '../helpers/tls-fixtures.js';
import { makeDisk } from './helpers/disk.js';
import { startNbdkit, type Upstream } from './helpers/upstream.js';

describe('nbds:// base on nbdkit with TLS', () => {
  const tmp = useTmpDir('nbd-tls');
  let disk: string;
  let content: Buffer;
  let fx: TlsFixtures;
  let x509: Upstream;
  let x509Unix: Upstream;
  let psk: Upstream;
  const bases = new Set<NbdBase>();

  beforeAll(async () => {
    requireTool('nbdkit');
    disk = tmp('disk.img');
    content = await makeDisk(disk, 3);
    fx = await makeTlsFixtures(tmp('pki'));
    // nbdkit reads ca-cert.pem, server-cert.pem and server-key.pem from the directory.
    const certs = ['--tls=require', `--tls-certificates=${tmp('pki')}`, '--tls-verify-peer'];
    x509 = await startNbdkit({ port: 0 }, [...certs, 'file', disk]);
    x509Unix = await startNbdkit({ socket: tmp('x509.sock') }, [...certs, 'file', disk]);
    psk = await startNbdkit({ socket: tmp('psk.sock') }, ['--tls=require', `--tls-psk=${fx.pskFile}`, 'file', disk]);
  });

  afterEach(async () => {
    for (const b of bases) await b.close();
    bases.clear();
  });

  afterAll(async () => {
    for (const u of [x509, x509Unix, psk]) await u?.stop();
  });

  async function readsRight(uri: string): Promise<void> {
    const base = await openNbdBase(uri);
    bases.add(base);
    const buf = Buffer.alloc(128 * 1024);
    await base.read(buf, 0);
    expect(buf.equals(content.subarray(0, 128 * 1024))).toBe(true);
    expect(await base.details?.()).toMatchObject({ tls: true });
  }

  async function openFailure(uri: string): Promise<Error> {
    const err = await openNbdBase(uri).then(
      (b) => {
        bases.add(b);
        return null;
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).name).toBe('NbdSourceError');
    return err as Error;
  }

  it('reads over X.509 with a client certificate, by TCP and by unix socket', async () => {
    await readsRight(`nbds://127.0.0.1:${x509.port}/?tls-certificates=${fx.clientDir}`);
    await readsRight(`nbds+unix:///?socket=${x509Unix.socket}&tls-certificates=${fx.clientDir}&tls-hostname=localhost`);
  });

  it('reads with a pre-shared key', async () => {
    await readsRight(`nbds+unix:///?socket=${psk.socket}&tls-psk-file=${fx.pskFile}&tls-username=${fx.pskIdentity}`);
    // The file's only identity is used when none is named.
    await readsRight(`nbds+unix:///?socket=${psk.socket}&tls-psk-file=${fx.pskFile}`);
  });

  it('refuses plaintext to a TLS-only upstream, a certificate for another name, a wrong key', async () => {
    expect((await openFailure(`nbd://127.0.0.1:${x509.port}/`)).message).toMatch(/refused \(ERR_TLS_REQD, 0x80000005\)/);
    expect((await openFailure(`nbds+unix:///?socket=${x509Unix.socket}&tls-certificates=${fx.clientDir}&tls-hostname=elsewhere.example`)).message).toMatch(
      /cannot open the upstream export: connection closed: .*elsewhere\.example/,
    );
    const wrongKey = tmp('wrong.psk');
    await fs.writeFile(wrongKey, `${fx.pskIdentity}:${'ab'.repeat(32)}\n`);
    expect((await openFailure(`nbds+unix:///?socket=${psk.socket}&tls-psk-file=${wrongKey}`)).message).toMatch(/cannot open the upstream export: connection closed/);
    expect((await openFailure(`nbds+unix:///?socket=${psk.socket}&tls-psk-file=${tmp('absent.psk')}`)).message).toMatch(/cannot read the TLS credentials/);
  });
});
