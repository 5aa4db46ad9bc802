/**
 * The XML guard in front of the plist parser: real plists pass, and whatever passes never makes
 * the parser (which writes its complaints to the console) print anything.
 */
import fc from 'fast-check';
import { build, parse, type PlistValue } from 'plist';
import { afterEach, beforeEach, describe, expect, it, vi, type MockInstance } from 'vitest';
import { encodeMetadata } from '../../../src/formats/asif/metadata.js';
import { xmlProblem } from '../../../src/formats/asif/xml-guard.js';

/** STACKBD_SOAK=N runs N times as many cases. */
const soak = Math.max(1, Number(process.env.STACKBD_SOAK ?? 1));
const APPLE = encodeMetadata({ stableUUID: '47d4f646-0893-411d-8138-550ad7227273', layerType: 'overlay' }).subarray(0x200).toString('utf8');

const plistValue: fc.Arbitrary<PlistValue> = fc.letrec<{ value: PlistValue }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.string({ unit: 'binary' }),
    fc.integer(),
    fc.boolean(),
    fc.array(tie('value'), { maxLength: 3 }),
    fc.dictionary(fc.string({ unit: 'binary', minLength: 1 }), tie('value'), { maxKeys: 3 }),
  ),
})).value;

function carriesNonXml(value: PlistValue): boolean {
  if (typeof value === 'string') return /[\x00-\x08\x0B\x0C\x0E-\x1F\uFFFD\uFFFE\uFFFF\uD800-\uDFFF]/.test(value);
  if (Array.isArray(value)) return value.some(carriesNonXml);
  if (value && typeof value === 'object' && !(value instanceof Date) && !(value instanceof Uint8Array)) {
    return Object.entries(value).some(([k, v]) => carriesNonXml(k) || carriesNonXml(v));
  }
  return false;
}

describe('xmlProblem', () => {
  let printed: MockInstance[];
  beforeEach(() => {
    printed = (['error', 'warn', 'log'] as const).map((m) => vi.spyOn(console, m).mockImplementation(() => undefined));
  });
  afterEach(() => printed.forEach((p) => p.mockRestore()));
  const silent = (): boolean => printed.every((p) => p.mock.calls.length === 0);

  it("accepts Apple's property list and what the plist package builds", () => {
    expect(xmlProblem(APPLE)).toBeNull();
    fc.assert(
      fc.property(fc.dictionary(fc.string({ minLength: 1 }), plistValue, { maxKeys: 4 }), (dict) => {
        // Characters XML cannot carry at all: the builder emits references to them, rightly refused.
        if (carriesNonXml(dict)) return;
        const text = build(dict, { pretty: true, indent: '\t' });
        expect(xmlProblem(text)).toBeNull();
      }),
      { numRuns: 300 },
    );
  });

  it('lets nothing through that makes the parser print, across truncations and edits of real plists', () => {
    const edits = fc.record({
      cut: fc.nat(),
      at: fc.array(fc.nat(), { maxLength: 4 }),
      with: fc.array(fc.constantFrom('<', '>', '&', ';', '"', "'", '/', '=', '!', '?', '-', '[', ']', ' ', 'a', '#', 'x', '\u0001', '</key>', '<!--', ']]>', '&amp;', '&#0;', '\uFFFD', '<?xml version="1.0"?>'), {
        maxLength: 4,
      }),
      keep: fc.boolean(),
    });
    fc.assert(
      fc.property(edits, (e) => {
        let text = e.keep ? APPLE : APPLE.slice(0, e.cut % (APPLE.length + 1));
        e.at.forEach((at, k) => {
          const p = at % (text.length + 1);
          text = text.slice(0, p) + (e.with[k] ?? '') + text.slice(p + (k % 2));
        });
        if (xmlProblem(text) !== null) return;
        printed.forEach((p) => p.mockClear());
        try {
          parse(text);
        } catch {
          // Throwing is fine: it becomes a CorruptedImageError. Printing is not.
        }
        expect(silent(), `${JSON.stringify(text)} printed ${JSON.stringify(printed.map((p) => p.mock.calls))}`).toBe(true);
      }),
      { numRuns: 3000 * soak },
    );
  });

  it('names what is wrong and where', () => {
    expect(xmlProblem(APPLE.slice(0, 224))).toMatch(/not closed/);
    expect(xmlProblem(APPLE.slice(0, 15))).toMatch(/processing instruction at 0/);
    expect(xmlProblem('<a>&bogus;</a>')).toMatch(/character reference at 3/);
    expect(xmlProblem('<a></b>')).toMatch(/does not close/);
    expect(xmlProblem('<a/><b/>')).toMatch(/second root/);
    expect(xmlProblem('')).toMatch(/no root/);
  });
});
