/** Where S3 credentials, region and endpoint come from, and how s3:// URLs become request URLs. */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadAwsSettings, parseIni, resolveAwsSettings, type AwsFiles } from '../../src/remote/aws-config.js';
import { parseS3Url, s3ObjectUrl } from '../../src/remote/s3.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const CREDENTIALS = `
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = secretdefault

[work]
aws_access_key_id=AKIDWORK
aws_secret_access_key=secretwork
aws_session_token = tokenwork
`;
const CONFIG = `
[default]
region = eu-west-1
[profile work]
region = ap-south-1
s3 =
  addressing_style = path
[profile onlyconfig]
aws_access_key_id = AKIDCONF
aws_secret_access_key = secretconf
endpoint_url = http://10.0.0.1:9000
`;

function files(credentials: string | null, config: string | null): AwsFiles {
  return {
    credentials: credentials === null ? null : parseIni(credentials),
    config: config === null ? null : parseIni(config),
    credentialsFile: '/home/u/.aws/credentials',
    configFile: '/home/u/.aws/config',
  };
}

describe('resolveAwsSettings', () => {
  it('prefers the environment, then the credentials file, then the config file', () => {
    const env = { AWS_ACCESS_KEY_ID: 'AKIDENV', AWS_SECRET_ACCESS_KEY: 'secretenv', AWS_SESSION_TOKEN: 'tok' };
    expect(resolveAwsSettings(env, files(CREDENTIALS, CONFIG), null).credentials).toEqual({
      accessKeyId: 'AKIDENV',
      secretAccessKey: 'secretenv',
      sessionToken: 'tok',
      source: 'the environment (AWS_ACCESS_KEY_ID)',
    });
    const fromFile = resolveAwsSettings({}, files(CREDENTIALS, CONFIG), null);
    expect(fromFile.credentials).toMatchObject({ accessKeyId: 'AKIDDEFAULT', secretAccessKey: 'secretdefault', source: '/home/u/.aws/credentials [default]' });
    expect(fromFile.region).toBe('eu-west-1');
    const work = resolveAwsSettings({ AWS_PROFILE: 'work' }, files(CREDENTIALS, CONFIG), null);
    expect(work.credentials).toMatchObject({ accessKeyId: 'AKIDWORK', sessionToken: 'tokenwork' });
    expect(work.region).toBe('ap-south-1');
    const conf = resolveAwsSettings({ AWS_PROFILE: 'onlyconfig' }, files(CREDENTIALS, CONFIG), null);
    expect(conf.credentials).toMatchObject({ accessKeyId: 'AKIDCONF', source: '/home/u/.aws/config [profile onlyconfig]' });
    expect(conf.endpoint).toBe('http://10.0.0.1:9000');
  });

  it('takes the region and endpoint from the environment first, and works with no files', () => {
    const s = resolveAwsSettings({ AWS_REGION: 'us-west-2', AWS_DEFAULT_REGION: 'x', AWS_ENDPOINT_URL: 'http://127.0.0.1:8080' }, files(null, CONFIG), null);
    expect(s.region).toBe('us-west-2');
    expect(s.endpoint).toBe('http://127.0.0.1:8080');
    expect(s.credentials).toBeNull();
    expect(resolveAwsSettings({ AWS_DEFAULT_REGION: 'ca-central-1' }, files(null, null), 'http://opt:1').region).toBe('ca-central-1');
    expect(resolveAwsSettings({ AWS_ENDPOINT_URL: 'http://env:1' }, files(null, null), 'http://opt:1').endpoint).toBe('http://opt:1');
    expect(resolveAwsSettings({}, files(null, null), null).region).toBe('us-east-1');
  });

  it('needs both the key id and the secret', () => {
    expect(resolveAwsSettings({ AWS_ACCESS_KEY_ID: 'AKID' }, files('[default]\naws_access_key_id = X\n', null), null).credentials).toBeNull();
  });
});

describe('loadAwsSettings', () => {
  let dir = '';
  afterAll(() => removeDir(dir));
  it('reads AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE, and does without missing files', async () => {
    dir = await makeTempDir('stackbd-aws-');
    await fs.writeFile(path.join(dir, 'creds'), CREDENTIALS);
    await fs.writeFile(path.join(dir, 'conf'), CONFIG);
    const s = await loadAwsSettings({ AWS_SHARED_CREDENTIALS_FILE: path.join(dir, 'creds'), AWS_CONFIG_FILE: path.join(dir, 'conf'), AWS_PROFILE: 'work' }, null);
    expect(s.credentials?.accessKeyId).toBe('AKIDWORK');
    expect(s.region).toBe('ap-south-1');
    const none = await loadAwsSettings({ HOME: dir }, null);
    expect(none.credentials).toBeNull();
  });
});

describe('s3 URLs', () => {
  it('parses s3://bucket/key and refuses what is not one', () => {
    expect(parseS3Url('s3://images/golden/base v1.raw')).toEqual({ bucket: 'images', key: 'golden/base v1.raw' });
    expect(() => parseS3Url('s3://images')).toThrow(/expected s3:\/\/BUCKET\/KEY/);
    expect(() => parseS3Url('s3://a/key')).toThrow(/not a valid bucket name/);
  });

  it('uses virtual-hosted URLs on AWS and path-style on custom endpoints, encoding the key', () => {
    const loc = { bucket: 'images', key: 'golden/base (1).raw' };
    expect(s3ObjectUrl(loc, { endpoint: null, region: 'eu-west-1' }, 'auto').href).toBe('https://images.s3.eu-west-1.amazonaws.com/golden/base%20%281%29.raw');
    expect(s3ObjectUrl({ bucket: 'my.dotted.bucket', key: 'k' }, { endpoint: null, region: 'us-east-1' }, 'auto').href).toBe('https://s3.us-east-1.amazonaws.com/my.dotted.bucket/k');
    expect(s3ObjectUrl(loc, { endpoint: 'http://127.0.0.1:8080', region: 'us-east-1' }, 'auto').href).toBe('http://127.0.0.1:8080/images/golden/base%20%281%29.raw');
    expect(s3ObjectUrl(loc, { endpoint: 'http://minio.local:9000', region: 'us-east-1' }, 'virtual').href).toBe('http://images.minio.local:9000/golden/base%20%281%29.raw');
    expect(s3ObjectUrl(loc, { endpoint: null, region: 'us-east-1' }, 'path').href).toBe('https://s3.us-east-1.amazonaws.com/images/golden/base%20%281%29.raw');
  });
});
