/**
 * The two qcow2 codecs on hand-made input: raw deflate (node:zlib made it) and Zstandard
 * frames built byte by byte from RFC 8878 (raw and RLE blocks), with the trailing bytes a
 * qcow2 sector leaves after a compressed cluster, and every way a frame can be refused.
 */
import { randomBytes } from 'node:crypto';
import { deflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { CodecError } from '../../../src/io/codecs/codec.js';
import { rawDeflateDecoder } from '../../../src/io/codecs/deflate-raw.js';
import { zstdDecoder } from '../../../src/io/codecs/zstd.js';
import { zstdFrameExtent } from '../../../src/io/codecs/zstd-frame.js';

const MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

function blockHeader(last: boolean, type: number, size: number): number[] {
  const h = (size << 3) | (type << 1) | (last ? 1 : 0);
  return [h & 0xff, (h >> 8) & 0xff, (h >> 16) & 0xff];
}

/** A single-segment frame with a 2-byte content size, one raw block then one RLE block. */
function frame(raw: Buffer, rleByte: number, rleCount: number, checksum = false): Buffer {
  const content = raw.length + rleCount;
  const fcs = content - 256;
  const descriptor = 0x60 | (checksum ? 0x04 : 0);
  return Buffer.from([
    ...MAGIC,
    descriptor,
    fcs & 0xff,
    fcs >> 8,
    ...blockHeader(false, 0, raw.length),
    ...raw,
    ...blockHeader(true, 1, rleCount),
    rleByte,
    ...(checksum ? [1, 2, 3, 4] : []),
  ]);
}

describe('raw deflate', () => {
  it('decodes into the caller buffer and ignores what follows the stream', async () => {
    const data = randomBytes(65536);
    const input = Buffer.concat([deflateRawSync(data), randomBytes(300)]);
    const out = Buffer.alloc(65536);
    expect(await rawDeflateDecoder.decode(input, out)).toBe(65536);
    expect(out.equals(data)).toBe(true);
  });

  it('large outputs decode off the event loop with the same result', async () => {
    const data = Buffer.alloc(2 * 1024 * 1024, 'qcow2 ');
    const out = Buffer.alloc(data.length);
    expect(await rawDeflateDecoder.decode(deflateRawSync(data), out)).toBe(data.length);
    expect(out.equals(data)).toBe(true);
  });

  it('refuses a stream that decodes to more than the output holds, and garbage', async () => {
    await expect(rawDeflateDecoder.decode(deflateRawSync(Buffer.alloc(8192)), Buffer.alloc(4096))).rejects.toThrow(/more bytes than the cluster holds/);
    await expect(rawDeflateDecoder.decode(Buffer.alloc(64, 0xff), Buffer.alloc(4096))).rejects.toThrow(CodecError);
  });

  it('a stream cut short gives what it holds (the caller checks the length)', async () => {
    const whole = deflateRawSync(randomBytes(8192), { level: 0 });
    expect(await rawDeflateDecoder.decode(whole.subarray(0, 5000), Buffer.alloc(8192))).toBeLessThan(8192);
  });
});

describe('Zstandard frames', () => {
  const raw = Buffer.from('qcow2 zstd cluster, raw block; '.repeat(20));

  it('finds the end of a frame from its block headers, checksum included', () => {
    const f = frame(raw, 0x41, 1000, true);
    expect(zstdFrameExtent(Buffer.concat([f, randomBytes(100)]))).toEqual({ length: f.length, contentSize: raw.length + 1000, dictionaryId: 0 });
  });

  it('decodes raw and RLE blocks, ignoring the next cluster bytes after the frame', async () => {
    const out = Buffer.alloc(raw.length + 1000);
    const n = await zstdDecoder.decode(Buffer.concat([frame(raw, 0x41, 1000), Buffer.from(MAGIC), randomBytes(50)]), out);
    expect(n).toBe(out.length);
    expect(out.subarray(0, raw.length).equals(raw)).toBe(true);
    expect(out.subarray(raw.length).every((b) => b === 0x41)).toBe(true);
  });

  it('refuses frames it cannot trust', async () => {
    const out = Buffer.alloc(raw.length + 1000);
    const good = frame(raw, 0x41, 1000);
    const cases: Array<[string, Buffer, RegExp]> = [
      ['no magic', Buffer.from([0, 1, 2, 3, 4, 5, 6, 7]), /magic/],
      ['cut short', good.subarray(0, 40), /cut short/],
      ['reserved descriptor bit', Buffer.from([...MAGIC, 0x68, 0, 0, ...good.subarray(7)]), /reserved bit/],
      ['reserved block type', Buffer.from([...good.subarray(0, 7), ...blockHeader(true, 3, 4), 0, 0, 0, 0]), /reserved block type/],
      ['no content size', Buffer.from([...MAGIC, 0x00, 0x50, ...blockHeader(true, 1, 10), 7]), /does not declare its content size/],
      ['a dictionary', Buffer.from([...MAGIC, 0x21, 9, 0x10, ...blockHeader(true, 1, 16), 7]), /dictionary 9/],
      ['larger than the output', frame(raw, 0x41, 5000), /declares \d+ bytes, more than/],
      ['an oversized block', Buffer.from([...MAGIC, 0x20, 0x10, ...blockHeader(true, 0, 200_000)]), /larger than 128 KiB/],
    ];
    for (const [what, input, message] of cases) {
      const err = await zstdDecoder.decode(input, out).catch((e: unknown) => e);
      expect(err, what).toBeInstanceOf(CodecError);
      expect((err as Error).message, what).toMatch(message);
    }
  });
});
