import { describe, expect, it } from 'vitest';
import { encodeRequestHeader } from '../../src/nbd/codec.js';
import { Command, CommandFlag } from '../../src/nbd/constants.js';
import { RequestReader, RequestStreamError, type ParsedRequest } from '../../src/nbd/request-reader.js';

function stream(extended: boolean): { bytes: Buffer; expected: Array<Omit<ParsedRequest, 'payload' | 'payloadCopied'> & { payload: string }> } {
  const write = Buffer.from('0123456789abcdef0123');
  const reqs = [
    { flags: 0, type: Command.READ, cookie: 1n, offset: 0, length: 4096, payload: '' },
    {
      flags: CommandFlag.FUA | (extended ? CommandFlag.PAYLOAD_LEN : 0),
      type: Command.WRITE,
      cookie: 2n,
      offset: 512,
      length: write.length,
      payload: write.toString(),
    },
    { flags: 0, type: Command.FLUSH, cookie: 3n, offset: 0, length: 0, payload: '' },
    { flags: CommandFlag.NO_HOLE, type: Command.WRITE_ZEROES, cookie: 4n, offset: 2 ** 40, length: extended ? 2 ** 35 : 65536, payload: '' },
    { flags: 0, type: Command.DISC, cookie: 5n, offset: 0, length: 0, payload: '' },
  ];
  const parts: Buffer[] = [];
  for (const r of reqs) {
    parts.push(encodeRequestHeader(r, extended));
    if (r.payload) parts.push(Buffer.from(r.payload));
  }
  return { bytes: Buffer.concat(parts), expected: reqs };
}

function drain(reader: RequestReader): Array<Omit<ParsedRequest, 'payload' | 'payloadCopied'> & { payload: string }> {
  const out = [];
  for (let r = reader.next(); r; r = reader.next()) {
    const { payloadCopied: _copied, ...rest } = r;
    out.push({ ...rest, payload: r.payload.toString() });
  }
  return out;
}

describe('RequestReader', () => {
  for (const extended of [false, true]) {
    it(`parses a request stream split at every byte boundary (${extended ? 'extended' : 'compact'})`, () => {
      const { bytes, expected } = stream(extended);
      for (let cut = 0; cut <= bytes.length; cut++) {
        const reader = new RequestReader(extended);
        reader.push(bytes.subarray(0, cut));
        const got = drain(reader);
        reader.push(bytes.subarray(cut));
        got.push(...drain(reader));
        expect(got, `cut at ${cut}`).toEqual(expected);
        expect(reader.buffered).toBe(0);
      }
    });

    it(`parses a stream delivered one byte at a time (${extended ? 'extended' : 'compact'})`, () => {
      const { bytes, expected } = stream(extended);
      const reader = new RequestReader(extended);
      const got = [];
      for (const byte of bytes) {
        reader.push(Buffer.from([byte]));
        got.push(...drain(reader));
      }
      expect(got).toEqual(expected);
    });
  }

  it('rejects a bad magic and an absurd payload length', () => {
    const bad = new RequestReader(false);
    bad.push(Buffer.alloc(28));
    expect(() => bad.next()).toThrow(RequestStreamError);
    const huge = new RequestReader(false);
    huge.push(encodeRequestHeader({ flags: 0, type: Command.WRITE, cookie: 1n, offset: 0, length: 0xffffffff }, false));
    expect(() => huge.next()).toThrow(/payload/);
  });

  it('returns single-chunk payloads as views of the received buffer, and assembles the others with the allocator', () => {
    const { bytes } = stream(false);
    const reader = new RequestReader(false);
    reader.push(bytes);
    reader.next();
    const write = reader.next()!;
    expect(write.payload.buffer).toBe(bytes.buffer);
    expect(write.payloadCopied).toBe(false);

    const sizes: number[] = [];
    const split = new RequestReader(false, (size) => {
      sizes.push(size);
      return Buffer.alloc(size);
    });
    split.push(bytes.subarray(0, 60));
    split.push(bytes.subarray(60));
    split.next();
    const assembled = split.next()!;
    expect(assembled.payloadCopied).toBe(true);
    expect(assembled.payload.toString()).toBe('0123456789abcdef0123');
    expect(sizes).toEqual([20]);
  });
});

describe('RequestReader with transient input', () => {
  for (const extended of [false, true]) {
    it(`parses bytes valid only during the call, cut at every boundary (${extended ? 'extended' : 'compact'})`, () => {
      const { bytes, expected } = stream(extended);
      for (let cut = 0; cut <= bytes.length; cut++) {
        const reader = new RequestReader(extended);
        const scratch = Buffer.alloc(bytes.length);
        // Each call sees the bytes in the same scratch buffer, overwritten right after.
        for (const part of [bytes.subarray(0, cut), bytes.subarray(cut)]) {
          part.copy(scratch);
          reader.pushTransient(scratch.subarray(0, part.length));
          scratch.fill(0xff);
        }
        expect(drain(reader), `cut at ${cut}`).toEqual(expected);
        expect(reader.buffered).toBe(0);
      }
    });
  }

  it('rejects a bad magic in transient input', () => {
    const reader = new RequestReader(false);
    expect(() => reader.pushTransient(Buffer.alloc(28, 1))).toThrow(RequestStreamError);
  });

  it('reads the rest of a large payload in place, and the next header through the shared buffer again', () => {
    const payload = Buffer.alloc(300_000);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) % 251;
    const head = encodeRequestHeader({ flags: 0, type: Command.WRITE, cookie: 9n, offset: 4096, length: payload.length }, false);
    const tail = encodeRequestHeader({ flags: 0, type: Command.FLUSH, cookie: 10n, offset: 0, length: 0 }, false);
    const wire = Buffer.concat([head, payload, tail]);
    const reader = new RequestReader(false);
    const shared = Buffer.alloc(65_536);
    let pos = 0;
    let direct = 0;
    // A socket's reads: into the target the reader names, else into the shared buffer.
    while (pos < wire.length) {
      const target = reader.directTarget(32_768);
      const into = target ?? shared;
      const n = Math.min(into.length, wire.length - pos, 100_000);
      wire.copy(into, 0, pos, pos + n);
      pos += n;
      if (target) {
        direct += n;
        expect(reader.receivedDirect(target, n)).toBe(true);
      } else {
        reader.pushTransient(shared.subarray(0, n));
        shared.fill(0xee);
      }
    }
    const write = reader.next()!;
    expect(write.cookie).toBe(9n);
    expect(write.payload.equals(payload)).toBe(true);
    expect(reader.next()!.type).toBe(Command.FLUSH);
    expect(reader.buffered).toBe(0);
    // Only what came with the header was copied.
    expect(direct).toBe(payload.length - (65_536 - head.length));
  });

  it('names no target for a small rest, and refuses a view that is no longer its payload', () => {
    const reader = new RequestReader(false);
    const head = encodeRequestHeader({ flags: 0, type: Command.WRITE, cookie: 1n, offset: 0, length: 100_000 }, false);
    expect(reader.directTarget(1)).toBeNull();
    reader.pushTransient(Buffer.concat([head, Buffer.alloc(90_000, 1)]));
    expect(reader.directTarget(10_001)).toBeNull();
    const target = reader.directTarget(10_000)!;
    expect(target.length).toBe(10_000);
    reader.clear();
    expect(reader.receivedDirect(target, 10_000)).toBe(false);
    expect(reader.next()).toBeNull();
  });
});
