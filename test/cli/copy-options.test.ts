/** `--in-flight` of convert and commit: whole numbers from 1 to 64, anything else a usage error. */
import { describe, expect, it } from 'vitest';
import { inFlightFrom } from '../../src/cli/copy-options.js';
import { UsageError } from '../../src/cli/usage-error.js';

describe('--in-flight', () => {
  it('takes whole numbers from 1 to 64', () => {
    expect(inFlightFrom({ 'in-flight': 1 })).toBe(1);
    expect(inFlightFrom({ 'in-flight': 64 })).toBe(64);
  });
  it('refuses 0, fractions, NaN and more than 64 as usage errors', () => {
    for (const n of [0, 2.5, Number.NaN, 65, -1]) expect(() => inFlightFrom({ 'in-flight': n })).toThrow(UsageError);
  });
});
