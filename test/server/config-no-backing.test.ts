import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../src/server/config.js';

const FILE = '/etc/stackbd/config.json';
const parse = (value: unknown): ReturnType<typeof parseConfig> => parseConfig(JSON.stringify(value), FILE);

describe('--config files: "noBacking" on the base layer object', () => {
  it('marks the export when the base says true, and not otherwise', () => {
    const config = parse({
      exports: [
        { name: 'a', layers: [{ path: 'base.qcow2', format: 'qcow2', noBacking: true }, 'a.asif'] },
        { name: 'b', layers: [{ path: 'base.qcow2', noBacking: false }, 'b.asif'] },
        { name: 'c', layers: ['base.qcow2'] },
      ],
    });
    expect(config.exports[0]).toEqual({ name: 'a', layers: ['qcow2:/etc/stackbd/base.qcow2', '/etc/stackbd/a.asif'], readOnly: false, noBacking: true });
    expect(config.exports[1].noBacking).toBeUndefined();
    expect(config.exports[2].noBacking).toBeUndefined();
  });

  it('refuses it above the base and when it is not a boolean, naming the field', () => {
    const above = { exports: [{ name: 'a', layers: ['base.qcow2', { path: 'a.asif', noBacking: true }] }] };
    expect(() => parse(above)).toThrow(ConfigError);
    expect(() => parse(above)).toThrow(/^\/etc\/stackbd\/config\.json: exports\[0\]\.layers\[1\]\.noBacking is for the base/);
    const notBoolean = { exports: [{ name: 'a', layers: [{ path: 'base.qcow2', noBacking: 'yes' }] }] };
    expect(() => parse(notBoolean)).toThrow(/exports\[0\]\.layers\[0\]\.noBacking must be true or false/);
    const unknown = { exports: [{ name: 'a', layers: [{ path: 'base.qcow2', backing: false }] }] };
    expect(() => parse(unknown)).toThrow(/unknown field "backing" \(expected path, format, noBacking\)/);
  });
});
