/** Throw-away X.509 material (a CA, a server certificate for 127.0.0.1, a client certificate) and a PSK file. */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TlsFixtures {
  /** Holds ca-cert.pem, client-cert.pem, client-key.pem: the layout libnbd and QEMU read. */
  clientDir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  /** Holds keys.psk, for QEMU's tls-creds-psk dir=. */
  pskDir: string;
  pskFile: string;
  pskIdentity: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await run('openssl', args, { cwd, timeout: 30_000 });
  } catch (err) {
    throw new Error(`openssl ${args.join(' ')} failed (apt-get install -y openssl): ${String(err)}`);
  }
}

export async function makeTlsFixtures(dir: string): Promise<TlsFixtures> {
  const clientDir = path.join(dir, 'client');
  const pskDir = path.join(dir, 'psk');
  await fs.mkdir(clientDir, { recursive: true });
  await fs.mkdir(pskDir, { recursive: true });
  await fs.writeFile(path.join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  await fs.writeFile(path.join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem', '-days', '2', '-subj', '/CN=stackbd test CA'], dir);
  for (const who of ['server', 'client']) {
    await openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${who}-key.pem`, '-out', `${who}.csr`, '-subj', `/CN=${who === 'server' ? 'localhost' : 'client'}`], dir);
    await openssl(
      ['x509', '-req', '-in', `${who}.csr`, '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', `${who}-cert.pem`, '-days', '2', '-extfile', `${who}.ext`],
      dir,
    );
  }
  for (const name of ['ca-cert.pem', 'client-cert.pem', 'client-key.pem']) await fs.copyFile(path.join(dir, name), path.join(clientDir, name));
  const pskFile = path.join(pskDir, 'keys.psk');
  await fs.writeFile(pskFile, `alice:${randomBytes(32).toString('hex')}\n`);
  return {
    clientDir,
    caCert: path.join(dir, 'ca-cert.pem'),
    serverCert: path.join(dir, 'server-cert.pem'),
    serverKey: path.join(dir, 'server-key.pem'),
    pskDir,
    pskFile,
    pskIdentity: 'alice',
  };
}
