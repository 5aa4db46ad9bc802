/**
 * s3:// bases against a real Swift with s3api (real Signature V4 checking): reads, credentials
 * from the environment and from a shared credentials file, clear errors naming bucket/key and
 * the S3 error code, presigned URLs (HEAD refused, GET allowed), a replaced object, and the CLI.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Layer } from '../../src/formats/layer.js';
import { openRemote, RemoteSourceError, type RemoteOptions } from '../../src/remote/index.js';
import { STACKBD_BIN } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { readAt } from './helpers/read-at.js';
import { startSwift, SWIFT_ACCESS_KEY, SWIFT_REGION, SWIFT_SECRET_KEY, type Swift } from './helpers/swift.js';

const MiB = 1024 * 1024;
let dir: string;
let swift: Swift;
let content: Buffer;
const KEY = 's3://images/golden/base v1.raw';
const KEY_PATH = '/images/golden/base%20v1.raw';

function env(extra: Record<string, string> = {}): Record<string, string> {
  return { AWS_ACCESS_KEY_ID: SWIFT_ACCESS_KEY, AWS_SECRET_ACCESS_KEY: SWIFT_SECRET_KEY, AWS_REGION: SWIFT_REGION, HOME: dir, ...extra };
}

function options(extra: Partial<RemoteOptions> = {}): RemoteOptions {
  return { s3Endpoint: swift.endpoint, env: env(), retries: 1, blockSize: 64 * 1024, ...extra };
}


beforeAll(async () => {
  dir = await makeTempDir('stackbd-remote-s3-');
  swift = await startSwift(dir);
  content = randomBytes(2 * MiB + 512);
  expect((await swift.s3('PUT', '/images')).status).toBe(200);
  expect((await swift.s3('PUT', KEY_PATH, content)).status).toBe(200);
}, 180_000);

afterAll(async () => {
  await swift?.stop();
  if (dir) await removeDir(dir);
}, 60_000);

describe('an s3:// base on Swift', () => {
  it('reads with SigV4 credentials from the environment, pinned by the ETag', async () => {
    const layer = await openRemote(KEY, options());
    try {
      expect(layer.format).toBe('s3');
      expect(layer.path).toBe(KEY);
      expect(layer.size).toBe(content.length);
      expect(await layer.pin()).toEqual({ size: content.length, etag: expect.stringMatching(/^"[0-9a-f]{32}"$/) });
      for (const [offset, length] of [
        [0, 4096],
        [100_000, 300_000],
        [content.length - 700, 700],
      ]) {
        expect((await readAt(layer, offset, length)).equals(content.subarray(offset, offset + length))).toBe(true);
      }
    } finally {
      await layer.close();
    }
  });

  it('takes credentials from a shared credentials file and profile', async () => {
    const file = path.join(dir, 'credentials');
    await fs.writeFile(file, `[default]\naws_access_key_id = nobody\naws_secret_access_key = wrong\n\n[swift]\naws_access_key_id = ${SWIFT_ACCESS_KEY}\naws_secret_access_key = ${SWIFT_SECRET_KEY}\n`);
    const layer = await openRemote(KEY, options({ env: { AWS_SHARED_CREDENTIALS_FILE: file, AWS_PROFILE: 'swift', AWS_REGION: SWIFT_REGION, HOME: dir } }));
    try {
      expect((await readAt(layer, 512, 512)).equals(content.subarray(512, 1024))).toBe(true);
    } finally {
      await layer.close();
    }
  });

  it('names bucket/key and the S3 error code when the secret or the key is wrong', async () => {
    const wrongSecret = openRemote(KEY, options({ env: env({ AWS_SECRET_ACCESS_KEY: 'not-the-secret' }) }));
    await expect(wrongSecret).rejects.toBeInstanceOf(RemoteSourceError);
    await expect(openRemote(KEY, options({ env: env({ AWS_SECRET_ACCESS_KEY: 'not-the-secret' }) }))).rejects.toThrow(
      /^s3:\/\/images\/golden\/base v1\.raw: GET was refused: HTTP 403 \(SignatureDoesNotMatch.*credentials from the environment/,
    );
    await expect(openRemote('s3://images/golden/missing.raw', options())).rejects.toThrow(/^s3:\/\/images\/golden\/missing\.raw: GET was refused: HTTP 404 \(NoSuchKey/);
    await expect(openRemote('s3://nobucket/x.raw', options())).rejects.toThrow(/^s3:\/\/nobucket\/x\.raw: .*HTTP 404 \(NoSuchBucket/);
    await expect(openRemote(KEY, options({ env: { HOME: dir, AWS_REGION: SWIFT_REGION } }))).rejects.toThrow(/HTTP 4\d\d.*no credentials found/);
  });

  it('reads a presigned URL, whose HEAD is refused, with a 1-byte GET to open it; the signature is not shown', async () => {
    const url = swift.presign(KEY_PATH, 600);
    const head = await fetch(url, { method: 'HEAD' });
    expect(head.status).toBe(403);
    const layer = await openRemote(url, { retries: 1 });
    try {
      expect(layer.path).toBe(`${swift.endpoint}${KEY_PATH}?…`);
      expect(layer.size).toBe(content.length);
      expect((await readAt(layer, 1 * MiB, 4096)).equals(content.subarray(1 * MiB, 1 * MiB + 4096))).toBe(true);
    } finally {
      await layer.close();
    }
  });

  it('fails every read once the object is replaced, and a new open pins the new object', async () => {
    await swift.s3('PUT', '/images/swap.raw', content);
    const warnings: string[] = [];
    const layer = await openRemote('s3://images/swap.raw', options({ onWarning: (m) => warnings.push(m), readaheadMaxBytes: 0 }));
    try {
      const before = (await layer.pin())!;
      await readAt(layer, 0, 4096);
      const replacement = randomBytes(content.length);
      expect((await swift.s3('PUT', '/images/swap.raw', replacement)).status).toBe(200);
      await expect(readAt(layer, 1 * MiB, 4096)).rejects.toMatchObject({ errno: 'EIO', message: expect.stringMatching(/^s3:\/\/images\/swap\.raw: the remote base changed under the stack/) });
      await expect(readAt(layer, 0, 4096)).rejects.toMatchObject({ errno: 'EIO' });
      expect(warnings).toHaveLength(1);
      const fresh = await openRemote('s3://images/swap.raw', options());
      try {
        expect((await fresh.pin())!.etag).not.toBe(before.etag);
        expect((await readAt(fresh, 1 * MiB, 4096)).equals(replacement.subarray(1 * MiB, 1 * MiB + 4096))).toBe(true);
      } finally {
        await fresh.close();
      }
    } finally {
      await layer.close();
    }
  });

  it('converts an s3:// base with the CLI, the endpoint from AWS_ENDPOINT_URL', async () => {
    const out = path.join(dir, 'out.raw');
    const run = promisify(execFile);
    await run(process.execPath, [STACKBD_BIN, 'convert', KEY, '-O', out], { env: { ...process.env, ...env({ AWS_ENDPOINT_URL: swift.endpoint }) }, timeout: 60_000 });
    expect((await fs.readFile(out)).equals(content)).toBe(true);
    const info = await run(process.execPath, [STACKBD_BIN, 'info', '--json', KEY, '--s3-endpoint', swift.endpoint], { env: { ...process.env, ...env() }, timeout: 60_000 });
    expect(JSON.parse(info.stdout)).toMatchObject({ virtualSize: content.length, layers: [{ format: 's3', path: KEY, details: { pinned: true } }] });
  });
});
