/**
 * The chunk decoders: each decodes valid streams into the caller's buffer and turns every bad
 * input (truncated, damaged, too large, not its format, random bytes) into a CodecError, in
 * bounded time; never another exception.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { deflateRawSync, deflateSync } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { resolve } from 'node:path';
import { loadStructure } from '../../../src/formats/dmg/load.js';
import { adcDecoder } from '../../../src/io/codecs/adc.js';
import { CodecError, type ChunkDecoder } from '../../../src/io/codecs/codec.js';
import { DECODERS, decoderFor } from '../../../src/io/codecs/index.js';
import { openFdFile } from '../../../src/io/fd-file.js';
import { requireTool } from '../../helpers/require-tool.js';
import { PROJECT_ROOT } from '../../helpers/spawn-server.js';
import { withTimeLimit } from '../../formats/helpers/time-limit.js';

/** Compressible, but not trivially: text with random words. */
function sample(size: number): Buffer {
  const words = ['disk', 'image', 'chunk', 'sector', 'stack', 'overlay', 'base', 'koly', 'mish'];
  const out = Buffer.alloc(size);
  let at = 0;
  let seed = 7;
  while (at < size) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    at += out.write(`${words[seed % words.length]} ${seed % 1000} `, at);
  }
  return out;
}

function tool(cmd: string, args: string[], input: Buffer): Buffer {
  requireTool(cmd);
  return execFileSync(cmd, args, { input, maxBuffer: 64 * 1024 * 1024 });
}

async function decodeAll(decoder: ChunkDecoder, input: Uint8Array, size: number): Promise<Buffer> {
  const out = Buffer.alloc(size);
  const n = await decoder.decode(input, out);
  return out.subarray(0, n);
}

async function expectCodecError(decoder: ChunkDecoder, input: Uint8Array, size: number, message?: RegExp): Promise<void> {
  const err: unknown = await decoder.decode(input, Buffer.alloc(size)).then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CodecError);
  if (message) expect((err as Error).message).toMatch(message);
}

const data = sample(300_000);

describe('zlib', () => {
  const z = decoderFor('zlib')!;
  const packed = deflateSync(data, { level: 1 });

  it('decodes an RFC 1950 stream into exactly the declared bytes', async () => {
    expect((await decodeAll(z, packed, data.length)).equals(data)).toBe(true);
  });

  it('refuses output past the declared size, trailing bytes, truncation, raw deflate and junk', async () => {
    await expectCodecError(z, packed, data.length - 1, /more than/);
    await expectCodecError(z, Buffer.concat([packed, Buffer.from('junk')]), data.length, /ends after/);
    await expectCodecError(z, packed.subarray(0, packed.length - 10), data.length);
    await expectCodecError(z, deflateRawSync(data), data.length);
    await expectCodecError(z, Buffer.alloc(0), data.length);
    const flipped = Buffer.from(packed);
    flipped[100] ^= 0x55;
    await expectCodecError(z, flipped, data.length);
  });
});

describe('bzip2', () => {
  const b = decoderFor('bzip2')!;

  it('decodes a bzip2 stream', async () => {
    const packed = tool('bzip2', ['-c'], data);
    expect((await decodeAll(b, packed, data.length)).equals(data)).toBe(true);
  });

  it('refuses output past the declared size, truncation, damage and junk', async () => {
    const packed = tool('bzip2', ['-c'], data);
    await expectCodecError(b, packed, data.length - 1, /more than/);
    await expectCodecError(b, packed.subarray(0, packed.length - 20), data.length);
    await expectCodecError(b, packed.subarray(0, 3), data.length);
    await expectCodecError(b, Buffer.from('hello'), data.length);
    const flipped = Buffer.from(packed);
    flipped[200] ^= 0x55;
    await expectCodecError(b, flipped, data.length);
  });
});

describe('xz (the LZMA chunks of ULMO images)', () => {
  const x = decoderFor('xz')!;

  it.each([['crc32'], ['crc64'], ['none']])('decodes an .xz stream with check %s', async (check) => {
    const packed = tool('xz', ['-c', '-C', check], data);
    expect((await decodeAll(x, packed, data.length)).equals(data)).toBe(true);
  });

  it('refuses SHA-256 checks, .lzma and raw LZMA2 streams, truncation, trailing bytes and damage', async () => {
    const packed = tool('xz', ['-c'], data);
    await expectCodecError(x, tool('xz', ['-c', '-C', 'sha256'], data), data.length, /SHA-256/);
    await expectCodecError(x, tool('xz', ['-c', '--format=lzma'], data), data.length, /not an \.xz stream/);
    await expectCodecError(x, tool('xz', ['-c', '--format=raw', '--lzma2=dict=1MiB'], data), data.length);
    await expectCodecError(x, packed.subarray(0, packed.length - 8), data.length, /truncated/);
    await expectCodecError(x, Buffer.concat([packed, Buffer.from('junk')]), data.length);
    await expectCodecError(x, Buffer.alloc(0), data.length, /empty/);
    const flipped = Buffer.from(packed);
    flipped[packed.length >> 1] ^= 0x55;
    await expectCodecError(x, flipped, data.length);
  });

  it('cancels a stream that decodes past the declared size, and the next decode still runs', async () => {
    const packed = tool('xz', ['-c'], data);
    await expectCodecError(x, packed, 1000, /more than 1000/);
    // The package serialises streams behind a lock: an abandoned one would stall this decode.
    const again = await withTimeLimit(decodeAll(x, packed, data.length), 20_000, 'xz decode after a cancelled one');
    expect(again.equals(data)).toBe(true);
  });
});

describe('ADC', () => {
  it('decodes literals, 2- and 3-byte matches and overlapping matches', async () => {
    // "abc" literal; 2-byte match: length (0x04 >> 2) + 3 = 4, distance 2 -> "abca";
    // 3-byte match: length 0x41 - 0x3c = 5, distance 0 -> repeats the last byte 5 times.
    const stream = Buffer.from([0x82, 0x61, 0x62, 0x63, 0x04, 0x02, 0x41, 0x00, 0x00]);
    expect((await decodeAll(adcDecoder, stream, 12)).toString('latin1')).toBe('abcabcaaaaaa');
  });

  it('stops at the declared size and refuses bad streams', async () => {
    await expectCodecError(adcDecoder, Buffer.from([0x82, 0x61]), 10, /truncated/);
    await expectCodecError(adcDecoder, Buffer.from([0x80, 0x61, 0x04]), 10, /truncated/);
    await expectCodecError(adcDecoder, Buffer.from([0x80, 0x61, 0x04, 0x05]), 10, /before the start/);
    await expectCodecError(adcDecoder, Buffer.from([0x83, 1, 2, 3, 4]), 3, /more than 3/);
    await expectCodecError(adcDecoder, Buffer.from([0x80, 0x61, 0x7f, 0, 0]), 10, /more than 10/);
  });

  it('agrees with the apple-data-compression package on valid streams', async () => {
    const adc = createRequire(import.meta.url)('apple-data-compression') as { decompress(input: Buffer): Buffer };
    await fc.assert(
      fc.asyncProperty(fc.array(fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 128 }), fc.tuple(fc.integer({ min: 3, max: 67 }), fc.integer({ min: 0, max: 300 }))), { maxLength: 40 }), async (ops) => {
        // A valid stream: literal runs, then matches whose distance stays inside the output.
        const parts: number[] = [];
        let produced = 0;
        for (const op of ops) {
          if (op instanceof Uint8Array) {
            parts.push(0x7f + op.length, ...op);
            produced += op.length;
          } else if (produced > 0) {
            const distance = Math.min(op[1], produced - 1);
            const length = op[0] <= 18 && distance < 1024 ? op[0] : Math.max(op[0], 4);
            if (length <= 18 && distance < 1024) parts.push(((length - 3) << 2) | (distance >> 8), distance & 0xff);
            else parts.push(0x3c + length, distance >> 8, distance & 0xff);
            produced += length;
          }
        }
        const stream = Buffer.from(parts);
        const ours = await decodeAll(adcDecoder, stream, produced);
        expect(ours.equals(adc.decompress(stream))).toBe(true);
      }),
      { numRuns: 200, seed: 42 },
    );
  });
});

/** A valid stream of each codec: made by its tool, by hand (ADC) or taken from the ULFO fixture (LZFSE). */
async function validStream(name: string): Promise<{ plain: Buffer; packed: Buffer }> {
  if (name === 'lzfse') {
    const file = await openFdFile(resolve(PROJECT_ROOT, 'test/fixtures/dmg/compression-lzfse.dmg'), { readOnly: true });
    try {
      // The first chunk of the third partition: 54 sectors of a FAT16 file system.
      const chunk = (await loadStructure(file)).partitions[2].table.chunks[0];
      const packed = Buffer.alloc(chunk.length);
      await file.read(packed, chunk.offset);
      return { plain: Buffer.alloc(chunk.sectors * 512), packed };
    } finally {
      await file.close();
    }
  }
  const plain = randomBytes(4096).fill(0x41, 1000, 3000);
  if (name === 'adc') return { plain: Buffer.alloc(1 + 3 * 67), packed: Buffer.from([0x80, 0x41, 0x7f, 0x00, 0x00, 0x7f, 0x00, 0x40, 0x7f, 0x00, 0x80]) };
  return { plain, packed: name === 'zlib' ? deflateSync(plain) : name === 'bzip2' ? tool('bzip2', ['-c'], plain) : tool('xz', ['-c'], plain) };
}

describe('every decoder and bad input', () => {
  it('the table holds zlib, bzip2, xz, ADC and LZFSE, each under its own name', () => {
    expect(Object.keys(DECODERS).sort()).toEqual(['adc', 'bzip2', 'lzfse', 'xz', 'zlib']);
    for (const [name, decoder] of Object.entries(DECODERS)) expect(decoder.name).toBe(name);
  });

  it.each(Object.values(DECODERS).map((d) => [d.name, d] as const))('%s: random bytes decode or fail with CodecError, in bounded time', async (_, decoder) => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 2048 }), fc.integer({ min: 0, max: 1 << 20 }), async (input, size) => {
        const out = Buffer.alloc(size);
        const result = await withTimeLimit(
          decoder.decode(input, out).then(
            (n) => n,
            (e: unknown) => e,
          ),
          20_000,
          `${decoder.name} on ${input.length} random bytes`,
        );
        if (typeof result === 'number') expect(result).toBeLessThanOrEqual(size);
        else expect(result).toBeInstanceOf(CodecError);
      }),
      { numRuns: 60, seed: 7 },
    );
  });

  it.each(Object.values(DECODERS).map((d) => [d.name, d] as const))('%s: a valid stream with random bytes flipped fails with CodecError or decodes within bounds', async (name, decoder) => {
    const { plain, packed } = await validStream(name);
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: packed.length - 1 }), fc.integer({ min: 1, max: 255 }), async (at, mask) => {
        const damaged = Buffer.from(packed);
        damaged[at] ^= mask;
        const result = await decoder.decode(damaged, Buffer.alloc(plain.length)).then(
          (n) => n,
          (e: unknown) => e,
        );
        if (typeof result !== 'number') expect(result).toBeInstanceOf(CodecError);
      }),
      { numRuns: 40, seed: 11 },
    );
  });
});
