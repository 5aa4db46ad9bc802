import { describe, expect, it } from 'vitest';
import {
  decodeRequestHeader,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeHoleChunk,
  encodeRequestHeader,
  encodeSimpleReply,
  writeDataChunkPrefix,
} from '../../src/nbd/codec.js';
import {
  applyInfoReply,
  decodeInfoRequest,
  decodeMetaContextRequest,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOptionReply,
  OptionFormatError,
  type ExportInfo,
} from '../../src/nbd/handshake.js';
import { ByteQueue } from '../../src/nbd/byte-queue.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('handshake codec', () => {
  it('encodes the greeting with FIXED_NEWSTYLE and NO_ZEROES', () => {
    expect(encodeGreeting()).toEqual(hex('4e42444d41474943 49484156454f5054 0003'));
  });

  it('encodes an option reply header', () => {
    expect(encodeOptionReply(7, 1)).toEqual(hex('0003e889045565a9 00000007 00000001 00000000'));
    expect(encodeOptionReply(3, 0x80000001, Buffer.from('no'))).toEqual(hex('0003e889045565a9 00000003 80000001 00000002 6e6f'));
  });

  it('encodes the EXPORT_NAME reply with and without the 124 zero bytes', () => {
    expect(encodeExportNameReply(0x100000000, 0x1ed, true)).toEqual(hex('0000000100000000 01ed'));
    const padded = encodeExportNameReply(512, 1, false);
    expect(padded.length).toBe(134);
    expect(padded.subarray(10).every((b) => b === 0)).toBe(true);
  });

  it('round-trips INFO/GO requests and rejects inconsistent lengths', () => {
    const data = encodeInfoRequest({ name: 'vm', infos: [1, 3] });
    expect(data).toEqual(hex('00000002 766d 0002 0001 0003'));
    expect(decodeInfoRequest(data)).toEqual({ name: 'vm', infos: [1, 3] });
    expect(() => decodeInfoRequest(data.subarray(0, data.length - 1))).toThrow(OptionFormatError);
    expect(() => decodeInfoRequest(Buffer.concat([data, Buffer.alloc(2)]))).toThrow(OptionFormatError);
    expect(() => decodeInfoRequest(hex('0000ffff 0000'))).toThrow(OptionFormatError);
    expect(() => decodeInfoRequest(hex('0000'))).toThrow(OptionFormatError);
  });

  it('round-trips metadata context requests', () => {
    const data = encodeMetaContextRequest({ name: '', queries: ['base:allocation', 'qemu:'] });
    expect(decodeMetaContextRequest(data)).toEqual({ name: '', queries: ['base:allocation', 'qemu:'] });
    expect(() => decodeMetaContextRequest(data.subarray(0, data.length - 2))).toThrow(OptionFormatError);
    expect(() => decodeMetaContextRequest(hex('00000000 00000005'))).toThrow(OptionFormatError);
  });

  it('encodes info replies that the client-side decoder reads back', () => {
    const info: Partial<ExportInfo> = {};
    applyInfoReply(info, encodeInfoExport(2 ** 40 + 512, 0x5ed));
    applyInfoReply(info, encodeInfoBlockSize({ minimum: 1, preferred: 4096, maximum: 33554432 }));
    expect(info).toEqual({ size: 2 ** 40 + 512, flags: 0x5ed, blockSize: { minimum: 1, preferred: 4096, maximum: 33554432 } });
    expect(encodeInfoBlockSize({ minimum: 1, preferred: 4096, maximum: 33554432 })).toEqual(hex('0003 00000001 00001000 02000000'));
  });
});

describe('transmission codec', () => {
  it('decodes a compact request header (golden bytes)', () => {
    const bytes = hex('25609513 0001 0001 0102030405060708 0000000100000200 00001000');
    expect(decodeRequestHeader(bytes, 0, false)).toEqual({
      flags: 1,
      type: 1,
      cookie: 0x0102030405060708n,
      offset: 2 ** 32 + 512,
      length: 4096,
      payload: Buffer.alloc(0),
      payloadCopied: false,
    });
    expect(decodeRequestHeader(bytes, 0, true)).toBeNull();
  });

  it('round-trips extended request headers with 64-bit lengths', () => {
    const header = { flags: 0x20, type: 6, cookie: 42n, offset: 2 ** 45, length: 2 ** 41 + 7 };
    const bytes = encodeRequestHeader(header, true);
    expect(bytes.length).toBe(32);
    expect(bytes.readUInt32BE(0)).toBe(0x21e41c71);
    expect(decodeRequestHeader(bytes, 0, true)).toEqual({ ...header, payload: Buffer.alloc(0), payloadCopied: false });
    expect(decodeRequestHeader(bytes, 0, false)).toBeNull();
  });

  it('encodes simple and structured replies (golden bytes)', () => {
    expect(encodeSimpleReply(5n, 22)).toEqual(hex('67446698 00000016 0000000000000005'));
    const hole = encodeHoleChunk('structured', 9n, 0, 4096, 8192, true);
    expect(hole).toEqual(hex('668e33ef 0001 0002 0000000000000009 0000000c 0000000000001000 00002000'));
    const err = encodeErrorChunk('structured', 1n, 0, 5, 'io');
    expect(err).toEqual(hex('668e33ef 0001 8001 0000000000000001 00000008 00000005 0002 696f'));
  });

  it('encodes extended replies with the request offset', () => {
    const chunk = encodeBlockStatusChunk('extended', 3n, 1024, 1, [{ length: 2 ** 33, flags: 3 }], true);
    expect(chunk).toEqual(
      hex('6e8a278c 0001 0006 0000000000000003 0000000000000400 0000000000000018 00000001 00000001 0000000200000000 0000000000000003'),
    );
    const compact = encodeBlockStatusChunk('structured', 3n, 0, 1, [{ length: 512, flags: 0 }, { length: 1024, flags: 3 }], false);
    expect(compact).toEqual(hex('668e33ef 0000 0005 0000000000000003 00000014 00000001 00000200 00000000 00000400 00000003'));
  });

  it('writes an OFFSET_DATA prefix in front of data in place', () => {
    const buf = Buffer.alloc(28 + 4);
    buf.write('abcd', 28);
    writeDataChunkPrefix(buf, 0, 'structured', 7n, 512, 512, 4, true);
    expect(buf).toEqual(hex('668e33ef 0001 0001 0000000000000007 0000000c 0000000000000200 61626364'));
  });
});

describe('ByteQueue', () => {
  it('returns views within one chunk and copies across chunks', () => {
    const q = new ByteQueue();
    const a = Buffer.from('hello');
    q.push(a);
    q.push(Buffer.from(' world'));
    const first = q.take(2);
    expect(first.buffer).toBe(a.buffer);
    expect(q.peek(6).toString()).toBe('llo wo');
    expect(q.take(6).toString()).toBe('llo wo');
    q.skip(1);
    expect(q.take(2).toString()).toBe('ld');
    expect(q.length).toBe(0);
    expect(() => q.take(1)).toThrow(RangeError);
  });
});
