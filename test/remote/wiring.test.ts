/** Where remote bases plug in without a network: the chain rules, DiskImage.open, config files, URL detection. */
import { writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { IncompatibleStackingError } from '../../src/block/errors.js';
import { displaySource, isRemoteSource } from '../../src/remote/index.js';
import { redactUrl } from '../../src/remote/redact.js';
import { parseConfig } from '../../src/server/config.js';
import { checkChain, type ChainLink } from '../../src/stack/chain.js';
import { DiskImage } from '../../src/stack/disk-image.js';
import { useTmpDir } from '../formats/helpers/tmp-dir.js';

const tmp = useTmpDir('remote-wiring');

const pin = { size: 1 << 30, etag: '"abc"' };
const remote: ChainLink = { path: 'https://images.test/golden.raw', format: 'http', layerUUID: null, parentUUID: null, layerType: null, pin };
const cache: ChainLink = {
  path: '/var/cache.asif',
  format: 'asif',
  layerUUID: 'c0c0c0c0-0000-4000-8000-000000000001',
  parentUUID: null,
  parentPin: pin,
  layerType: 'cache',
  pin: null,
};
const overlay: ChainLink = {
  path: '/vm/overlay.asif',
  format: 'asif',
  layerUUID: 'c0c0c0c0-0000-4000-8000-000000000002',
  parentUUID: cache.layerUUID,
  layerType: 'overlay',
  pin: null,
};

describe('remote bases in the chain rules', () => {
  it('accepts ASIF layers that recorded the pin of the remote base above it', () => {
    expect(checkChain([remote, cache, overlay], true)).toEqual([]);
    // An object replaced since: another ETag.
    expect(() => checkChain([{ ...remote, pin: { ...pin, etag: '"def"' } }, cache, overlay], true)).toThrow(/ETag was "abc", now "def"/);
  });

  it('refuses a remote base above another layer, and a child that names a parent UUID', () => {
    expect(() => checkChain([cache, remote], false)).toThrow(IncompatibleStackingError);
    expect(() => checkChain([overlay, remote], false)).toThrow(/a HTTP image can only be the base of a stack/);
    expect(() => checkChain([remote, overlay], false)).toThrow(/its parent UUID is .*, an ASIF layer, but the layer below is the HTTP https:\/\/images.test\/golden.raw/);
  });

  it('refuses a URL as a layer above the base before touching the network', async () => {
    const base = tmp('base.raw');
    writeFileSync(base, Buffer.alloc(1024 * 1024));
    await expect(DiskImage.open([base, 'https://127.0.0.1:9/x.raw?sig=s'])).rejects.toThrow(
      `https://127.0.0.1:9/x.raw?…: a remote base can only be the base of a stack, not a layer above ${base}`,
    );
    const image = await DiskImage.open(base);
    await expect(image.appending({ path: 's3://bucket/key', existing: true })).rejects.toBeInstanceOf(IncompatibleStackingError);
    await image.close();
  });
});

describe('URLs where paths go', () => {
  it('tells URLs from paths', () => {
    for (const s of ['http://h/x', 'HTTPS://h/x', 's3://b/k']) expect(isRemoteSource(s)).toBe(true);
    for (const s of ['/tmp/http://x', 'base.raw', 'file:///x', 'ftp://h/x']) expect(isRemoteSource(s)).toBe(false);
    for (const s of ['nbd://h/x', 'nbds://h/x', 'nbd+unix:///x?socket=/s']) expect(isRemoteSource(s)).toBe(true);
  });

  it('hides userinfo and the query string, and leaves paths alone', () => {
    expect(redactUrl('https://user:pw@h:8443/a/b.raw?X-Amz-Signature=abc#frag')).toBe('https://***@h:8443/a/b.raw?…');
    expect(displaySource('s3://bucket/key?versionId=1')).toBe('s3://bucket/key?…');
    expect(displaySource('/images/a?b.raw')).toBe('/images/a?b.raw');
  });

  it('keeps URLs in a config file as they are, resolving only paths', () => {
    const config = parseConfig(JSON.stringify({ exports: [{ name: 'vm', layers: ['https://h/golden.raw?sig=1', 'cache.asif'] }] }), '/etc/stackbd/config.json');
    expect(config.exports[0].layers).toEqual(['https://h/golden.raw?sig=1', '/etc/stackbd/cache.asif']);
  });
});
