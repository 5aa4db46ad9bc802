/** Apple-made LZFSE chunks: the ULFO fixture decodes to the same disk as the other encodings. */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CodecError } from '../../../../src/io/codecs/codec.js';
import { decodeLzfse } from '../../../../src/io/codecs/lzfse/index.js';
import { assembleDisk, ChunkType, dmgChunks, sha256 } from './helpers/dmg-chunks.js';

const FIXTURE = resolve(import.meta.dirname, '../../../fixtures/dmg/compression-lzfse.dmg');
const DISK_SHA256 = '0786ad1fdcba31a3f03ee80eb1d6e8c7ee2f4647a2b4b6f1855c9fe0719784de';

describe('LZFSE chunks of an Apple ULFO image', () => {
  const chunks = dmgChunks(readFileSync(FIXTURE));
  const lzfseChunks = chunks.filter((c) => c.type === ChunkType.LZFSE);

  it('decodes every chunk into the 5 MiB disk of the fixture README', () => {
    expect(lzfseChunks.length).toBeGreaterThan(0);
    // The fixture mixes an LZVN-only chunk with LZFSE v2 ones.
    const magics = new Set(lzfseChunks.map((c) => Buffer.from(c.data.subarray(0, 4)).toString('latin1')));
    expect([...magics].sort()).toEqual(['bvx2', 'bvxn']);
    const disk = assembleDisk(chunks, (chunk, out) => {
      if (chunk.type !== ChunkType.LZFSE) throw new Error(`unexpected chunk type 0x${chunk.type.toString(16)}`);
      return decodeLzfse(chunk.data, out);
    });
    expect(disk.length).toBe(5242880);
    expect(sha256(disk)).toBe(DISK_SHA256);
  });

  it('each chunk fails with CodecError when its output is one byte short or its last byte is cut', () => {
    for (const chunk of lzfseChunks) {
      const size = chunk.sectorCount * 512;
      expect(() => decodeLzfse(chunk.data, new Uint8Array(size - 1))).toThrow(CodecError);
      expect(() => decodeLzfse(chunk.data.subarray(0, chunk.data.length - 1), new Uint8Array(size))).toThrow(CodecError);
    }
  });
});
