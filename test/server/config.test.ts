import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../src/server/config.js';

const FILE = '/etc/stackbd/config.json';

describe('--config files', () => {
  it('takes a format per layer, as a prefix or an object, and keeps it through the path resolution', () => {
    const config = parseConfig(
      JSON.stringify({ exports: [{ name: 'vm', layers: ['raw:disk.img', { path: 'vm.asif', format: 'asif' }, { path: '/x/y.asif' }] }] }),
      FILE,
    );
    expect(config.exports[0].layers).toEqual(['raw:/etc/stackbd/disk.img', 'asif:/etc/stackbd/vm.asif', '/x/y.asif']);
    expect(() => parseConfig(JSON.stringify({ exports: [{ name: 'vm', layers: [{ path: 'a', format: 'vmdk' }] }] }), FILE)).toThrow(
      /exports\[0\]\.layers\[0\]\.format must be one of raw, asif/,
    );
  });

  it('parses exports and listeners and resolves paths against the file', () => {
    const config = parseConfig(
      JSON.stringify({
        listen: ['127.0.0.1:10809'],
        socket: ['/run/stackbd.sock'],
        syncInterval: 2,
        exports: [
          { name: 'vm', layers: ['base.raw', '/abs/overlay.asif'], description: 'a VM' },
          { name: '', layers: ['iso.raw'], readOnly: true },
        ],
      }),
      FILE,
    );
    expect(config).toEqual({
      listen: ['127.0.0.1:10809'],
      socket: ['/run/stackbd.sock'],
      syncInterval: 2,
      exports: [
        { name: 'vm', layers: [path.join('/etc/stackbd', 'base.raw'), '/abs/overlay.asif'], readOnly: false, description: 'a VM' },
        { name: '', layers: ['/etc/stackbd/iso.raw'], readOnly: true },
      ],
    });
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ['not JSON', '{', /not valid JSON/],
    ['a list at the top', [], /top level must be an object/],
    ['no exports', { exports: [] }, /"exports" must be a non-empty list/],
    ['an unknown field', { exports: [{ name: 'a', layers: ['x'] }], listn: [] }, /unknown field "listn"/],
    ['a name that is not a string', { exports: [{ name: 3, layers: ['x'] }] }, /exports\[0\]\.name must be a string/],
    ['no layers', { exports: [{ name: 'a', layers: [] }] }, /exports\[0\]\.layers must list at least one image/],
    ['a layer that is not a string', { exports: [{ name: 'a', layers: [1] }] }, /exports\[0\]\.layers\[0\] must be a path or an object/],
    ['a duplicate name', { exports: [{ name: 'a', layers: ['x'] }, { name: 'a', layers: ['y'] }] }, /export "a" is defined twice/],
    ['readOnly not a boolean', { exports: [{ name: 'a', layers: ['x'], readOnly: 'yes' }] }, /readOnly must be true or false/],
    ['an unknown export field', { exports: [{ name: 'a', layers: ['x'], size: 3 }] }, /exports\[0\]: unknown field "size"/],
    ['a negative sync interval', { exports: [{ name: 'a', layers: ['x'] }], syncInterval: -1 }, /syncInterval/],
  ];
  for (const [what, value, message] of bad) {
    it(`rejects ${what} with a message naming the file and the field`, () => {
      const text = typeof value === 'string' ? value : JSON.stringify(value);
      expect(() => parseConfig(text, FILE)).toThrow(ConfigError);
      expect(() => parseConfig(text, FILE)).toThrow(message);
      expect(() => parseConfig(text, FILE)).toThrow(/^\/etc\/stackbd\/config\.json: /);
    });
  }
});
