/**
 * Where one Zstandard frame ends, read from its header and block headers alone (RFC 8878
 * §3.1.1), without decoding it: qcow2 stores a compressed cluster in whole sectors, so the
 * frame is followed by bytes of the next cluster that a decoder would take for a second frame.
 *
 * Also says what the frame declares (content size, window size, dictionary), so that a decoder
 * can refuse a frame before it allocates anything for it.
 */
import { CodecError } from './codec.js';

export interface ZstdFrameExtent {
  /** Bytes from the start of the input to the end of the frame (checksum included). */
  readonly length: number;
  /** Frame_Content_Size, or null when the frame does not declare it. */
  readonly contentSize: number | null;
  readonly dictionaryId: number;
}

const MAGIC = 0xfd2fb528;
const MAX_BLOCK = 128 * 1024;
const FCS_BYTES = [0, 2, 4, 8] as const;
const DICT_BYTES = [0, 1, 2, 4] as const;

function readLE(input: Uint8Array, at: number, bytes: number): number {
  let value = 0;
  for (let i = bytes - 1; i >= 0; i--) value = value * 256 + input[at + i];
  return value;
}

export function zstdFrameExtent(input: Uint8Array): ZstdFrameExtent {
  const fail = (detail: string): never => {
    throw new CodecError('zstd', detail);
  };
  if (input.length < 6 || readLE(input, 0, 4) !== MAGIC) fail('no Zstandard frame magic');
  const descriptor = input[4];
  if (descriptor & 0x08) fail('reserved bit of the frame header descriptor is set');
  const singleSegment = (descriptor >> 5) & 1;
  const fcsFlag = descriptor >> 6;
  const hasChecksum = (descriptor >> 2) & 1;
  const dictBytes = DICT_BYTES[descriptor & 3];
  const fcsBytes = fcsFlag === 0 ? singleSegment : FCS_BYTES[fcsFlag];
  let at = 5 + (singleSegment ? 0 : 1);
  const headerEnd = at + dictBytes + fcsBytes;
  if (headerEnd > input.length) fail('the frame header is cut short');
  const dictionaryId = readLE(input, at, dictBytes);
  at += dictBytes;
  let contentSize: number | null = null;
  if (fcsBytes > 0) contentSize = readLE(input, at, fcsBytes) + (fcsBytes === 2 ? 256 : 0);
  at = headerEnd;
  for (;;) {
    if (at + 3 > input.length) fail('a block header is cut short');
    const header = readLE(input, at, 3);
    const last = header & 1;
    const type = (header >> 1) & 3;
    const size = header >>> 3;
    if (type === 3) fail('reserved block type');
    if (size > MAX_BLOCK) fail(`block of ${size} bytes is larger than 128 KiB`);
    at += 3 + (type === 1 ? 1 : size);
    if (at > input.length) fail('a block is cut short');
    if (last) break;
  }
  if (hasChecksum) at += 4;
  if (at > input.length) fail('the frame checksum is cut short');
  return { length: at, contentSize, dictionaryId };
}
