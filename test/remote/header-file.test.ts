/** The --header-file format. */
import { describe, expect, it } from 'vitest';
import { parseHeaderFile } from '../../src/remote/header-file.js';

describe('parseHeaderFile', () => {
  it('reads Name: value lines, skipping blanks and comments, keeping colons in values', () => {
    const text = '# tokens\nAuthorization: Bearer abc:def\r\n\n  X-Custom-Thing:   spaced value  \n';
    expect(parseHeaderFile(text, 'h.txt')).toEqual({ Authorization: 'Bearer abc:def', 'X-Custom-Thing': 'spaced value' });
  });

  it('refuses malformed lines, bad names, headers stackbd sets, and duplicates, naming file and line', () => {
    expect(() => parseHeaderFile('ok: 1\nno colon here\n', 'h.txt')).toThrow('h.txt line 2: expected "Name: value"');
    expect(() => parseHeaderFile('Bad Name: 1\n', 'h.txt')).toThrow(/line 1: "Bad Name" is not a valid header name/);
    expect(() => parseHeaderFile('Range: bytes=0-1\n', 'h.txt')).toThrow(/Range is set by stackbd/);
    expect(() => parseHeaderFile('if-match: "x"\n', 'h.txt')).toThrow(/set by stackbd/);
    expect(() => parseHeaderFile('A: 1\na: 2\n', 'h.txt')).toThrow(/line 2: a is given twice/);
    expect(() => parseHeaderFile(': empty\n', 'h.txt')).toThrow(/line 1/);
  });
});
