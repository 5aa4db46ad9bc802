/**
 * NBD STARTTLS with real clients: X.509 (with required client certificates) and PSK, in
 * "on" and "require" modes; a plaintext client never gets a byte of an export in require mode.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Option, OptionReply } from '../../src/nbd/constants.js';
import { encodeInfoRequest, encodeOption } from '../../src/nbd/handshake.js';
import { NbdClient } from '../../src/nbd/client.js';
import { requireTool } from '../helpers/require-tool.js';
import { runCommand } from '../helpers/run-command.js';
import { RawConnection } from '../helpers/raw-connection.js';
import { spawnServer, type SpawnedServer } from '../helpers/spawn-server.js';
import { makeTlsFixtures, type TlsFixtures } from '../helpers/tls-fixtures.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const SIZE = 4 * 1024 * 1024;

async function tool(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  const r = await runCommand(cmd, args, 30_000);
  return { code: r.code, out: r.stdout + r.stderr };
}

async function optionReply(c: RawConnection): Promise<number> {
  const h = await c.read(20);
  await c.read(h.readUInt32BE(16));
  return h.readUInt32BE(12);
}

describe('TLS', () => {
  let dir: string;
  let disk: string;
  let secret: Buffer;
  let fx: TlsFixtures;

  beforeAll(async () => {
    requireTool('nbdinfo');
    requireTool('qemu-img');
    dir = await makeTempDir();
    disk = path.join(dir, 'disk.raw');
    secret = randomBytes(SIZE);
    await fs.writeFile(disk, secret);
    fx = await makeTlsFixtures(path.join(dir, 'pki'));
  });
  afterAll(() => removeDir(dir));

  async function withServer(extra: string[], body: (s: SpawnedServer) => Promise<void>): Promise<void> {
    const server = await spawnServer({ args: ['--export', `d=${disk}`, ...extra] });
    try {
      await body(server);
    } finally {
      expect(await server.stop()).toBe(0);
    }
  }

  it('X.509, required, with client certificates: nbdinfo and qemu-img get in, plaintext gets nothing', async () => {
    const x509 = ['--tls', 'require', '--tls-cert', fx.serverCert, '--tls-key', fx.serverKey, '--tls-ca', fx.caCert];
    await withServer(x509, async (s) => {
      const info = await tool('nbdinfo', [`nbds://127.0.0.1:${s.port}/d?tls-certificates=${fx.clientDir}`]);
      expect(info.out).toContain('with TLS');
      expect(info.out).toContain(`export-size: ${SIZE}`);
      const out = path.join(dir, 'copy.raw');
      const convert = await tool('qemu-img', [
        'convert',
        '--object',
        `tls-creds-x509,id=tls0,endpoint=client,dir=${fx.clientDir}`,
        '--image-opts',
        `driver=nbd,host=127.0.0.1,port=${s.port},export=d,tls-creds=tls0`,
        '-O',
        'raw',
        out,
      ]);
      expect(convert.code, convert.out).toBe(0);
      expect((await fs.readFile(out)).equals(secret)).toBe(true);

      // Plaintext: every option but STARTTLS and ABORT is refused; nothing of the export leaks.
      const plain = await tool('nbdinfo', [`nbd://127.0.0.1:${s.port}/d`]);
      expect(plain.code).not.toBe(0);
      expect(plain.out).not.toContain('export-size');
      await expect(NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: s.port }, { exportName: 'd' })).rejects.toThrow();
      const raw = await RawConnection.open(s.port);
      await raw.read(18);
      raw.write(Buffer.from([0, 0, 0, 3]));
      for (const option of [Option.LIST, Option.STRUCTURED_REPLY, Option.INFO, Option.GO]) {
        const data = option === Option.INFO || option === Option.GO ? encodeInfoRequest({ name: 'd', infos: [] }) : Buffer.alloc(0);
        raw.write(encodeOption(option, data));
        expect(await optionReply(raw)).toBe(OptionReply.ERR_TLS_REQD);
      }
      raw.write(encodeOption(Option.EXPORT_NAME, Buffer.from('d')));
      expect(await raw.closedWithin(2000)).toBe(true);
      expect(raw.pending).toBe(0);

      // A client certificate is required.
      const noCert = path.join(dir, 'nocert');
      await fs.mkdir(noCert, { recursive: true });
      await fs.copyFile(fx.caCert, path.join(noCert, 'ca-cert.pem'));
      const anonymous = await tool('nbdinfo', [`nbds://127.0.0.1:${s.port}/d?tls-certificates=${noCert}`]);
      expect(anonymous.code).not.toBe(0);
    });
  });

  it('PSK, required: nbdinfo and qemu-img with the identity get in, a wrong key does not', async () => {
    await withServer(['--tls', 'require', '--tls-psk', fx.pskFile], async (s) => {
      const info = await tool('nbdinfo', [`nbds://${fx.pskIdentity}@127.0.0.1:${s.port}/d?tls-psk-file=${fx.pskFile}`]);
      expect(info.out).toContain('with TLS');
      const qemu = await tool('qemu-img', [
        'info',
        '--object',
        `tls-creds-psk,id=tls0,endpoint=client,dir=${fx.pskDir},username=${fx.pskIdentity}`,
        '--image-opts',
        `driver=nbd,host=127.0.0.1,port=${s.port},export=d,tls-creds=tls0`,
      ]);
      expect(qemu.code, qemu.out).toBe(0);
      expect(qemu.out).toContain(`${SIZE} bytes`);
      const wrong = path.join(dir, 'wrong.psk');
      await fs.writeFile(wrong, `${fx.pskIdentity}:${randomBytes(32).toString('hex')}\n`);
      const denied = await tool('nbdinfo', [`nbds://${fx.pskIdentity}@127.0.0.1:${s.port}/d?tls-psk-file=${wrong}`]);
      expect(denied.code).not.toBe(0);
    });
  });

  it('TLS "on" serves plaintext and TLS clients alike', async () => {
    await withServer(['--tls', 'on', '--tls-cert', fx.serverCert, '--tls-key', fx.serverKey], async (s) => {
      const secure = await tool('nbdinfo', [`nbds://127.0.0.1:${s.port}/d?tls-certificates=${fx.clientDir}`]);
      expect(secure.out).toContain('with TLS');
      const c = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port: s.port }, { exportName: 'd' });
      expect((await c.pread(0, 4096)).equals(secret.subarray(0, 4096))).toBe(true);
      await c.disconnect();
    });
  });

  it('rejects inconsistent TLS options with one line and exit status 2', async () => {
    for (const args of [
      ['--tls', 'require'],
      ['--tls', 'on', '--tls-cert', fx.serverCert],
      ['--tls', 'on', '--tls-psk', path.join(dir, 'missing.psk')],
      ['--tls-cert', fx.serverCert, '--tls-key', fx.serverKey],
    ]) {
      const r = await tool(process.execPath, [path.resolve('bin/stackbd.js'), 'serve', '--listen', '127.0.0.1:0', '--export', disk, ...args]);
      expect(r.code, `${args.join(' ')}: ${r.out}`).toBe(2);
      expect(r.out.trim().split('\n')).toHaveLength(1);
    }
  });
});
