/**
 * The zlib decoder's decodeToBuffer (the DMG reader's path: the inflated piece is handed over
 * without a copy): exactly the declared bytes in a buffer of their own, and every refusal of
 * `decode` (more than declared, trailing bytes, truncation, damage).
 */
import { randomBytes } from 'node:crypto';
import { deflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { CodecError } from '../../../src/io/codecs/codec.js';
import { decoderFor } from '../../../src/io/codecs/index.js';

const MiB = 1024 * 1024;

describe('zlib decodeToBuffer', () => {
  const z = decoderFor('zlib')!;
  // A chunk as UDZO cuts them: 1 MiB, half text, half random.
  const data = Buffer.concat([Buffer.alloc(MiB / 2, 'stackbd zlib chunk '), randomBytes(MiB / 2)]);
  const packed = deflateSync(data, { level: 1 });

  it('returns exactly the declared bytes, in buffers that do not share memory', async () => {
    expect(z.decodeToBuffer).toBeTypeOf('function');
    const a = await z.decodeToBuffer!(packed, MiB);
    const b = await z.decodeToBuffer!(packed, MiB);
    expect(a.equals(data)).toBe(true);
    a.fill(0);
    expect(b.equals(data)).toBe(true);
    // A chunk whose declared size is larger than its stream: the bytes there are, no more.
    expect((await z.decodeToBuffer!(packed, 2 * MiB)).length).toBe(MiB);
  });

  it('refuses what decode refuses', async () => {
    const refuse = (input: Buffer, max: number, message?: RegExp): Promise<void> => expect(z.decodeToBuffer!(input, max)).rejects.toThrow(message ?? CodecError);
    await refuse(packed, MiB - 1, /more than/);
    await refuse(Buffer.concat([packed, Buffer.from('junk')]), MiB, /ends after/);
    await refuse(packed.subarray(0, packed.length - 10), MiB);
    const flipped = Buffer.from(packed);
    flipped[100] ^= 0x55;
    await refuse(flipped, MiB);
    await refuse(packed, 0, /nothing to decode into/);
  });
});
