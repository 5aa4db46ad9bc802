import { describe, expect, it } from 'vitest';
import { CodecError } from '../../../../src/io/codecs/codec.js';
import { decodeLzfse, lzfseDecoder } from '../../../../src/io/codecs/lzfse/index.js';
import { specVectors } from './helpers/spec-vectors.js';

describe('LZFSE worked examples of the format sheet (§12)', () => {
  for (const v of specVectors()) {
    it(`decodes ${v.name}`, () => {
      const out = new Uint8Array(v.plain.length);
      expect(decodeLzfse(v.compressed, out)).toBe(v.plain.length);
      expect(Buffer.from(out).equals(Buffer.from(v.plain))).toBe(true);
    });

  }

  for (const v of specVectors().filter((x) => x.plain.length > 0)) {
    it(`${v.name}: an output one byte short is a CodecError`, () => {
      expect(() => decodeLzfse(v.compressed, new Uint8Array(v.plain.length - 1))).toThrow(CodecError);
    });
  }

  it('the ChunkDecoder resolves with the byte count and rejects with CodecError', async () => {
    const [a] = specVectors();
    const out = new Uint8Array(64);
    await expect(lzfseDecoder.decode(a.compressed, out)).resolves.toBe(a.plain.length);
    expect(lzfseDecoder.name).toBe('lzfse');
    await expect(lzfseDecoder.decode(a.compressed.subarray(0, 20), out)).rejects.toBeInstanceOf(CodecError);
  });
});
