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
    // A damaged Adler-32 (the stream's last four bytes) is always caught.
    const badCheck = Buffer.from(packed);
    badCheck[badCheck.length - 1] ^= 0x55;
    await refuse(badCheck, MiB);
    await refuse(packed, 0, /nothing to decode into/);
  });

  it('never returns wrong bytes for a damaged stream: it refuses, or the damage did not change what it decodes to', async () => {
    // A flip in the repeated text can turn a match distance of 19 into another multiple of 19,
    // which decodes to the same bytes: such a stream is not wrong, and it is rare, so both
    // outcomes are accepted and the refusals are counted.
    let refused = 0;
    for (const at of [2, 100, 1000, packed.length >> 2, packed.length >> 1, packed.length - 100]) {
      const flipped = Buffer.from(packed);
      flipped[at] ^= 0x55;
      const outcome = await z.decodeToBuffer!(flipped, MiB).then(
        (bytes) => ({ bytes }),
        (error: unknown) => ({ error }),
      );
      if ('error' in outcome) {
        expect(outcome.error).toBeInstanceOf(CodecError);
        refused++;
      } else {
        expect(outcome.bytes.equals(data)).toBe(true);
      }
    }
    expect(refused).toBeGreaterThan(0);
  });
});
