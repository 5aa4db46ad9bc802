/**
 * zlib chunks (DMG type 0x80000005, UDZO; qcow2's deflate is raw deflate and has its own
 * decoder): each chunk is one complete RFC 1950 stream. Inflated on libuv's pool with the
 * output capped at the chunk's declared size, so a hostile stream cannot make a large buffer.
 * The stream must end exactly at the end of the chunk (7-Zip requires it too): trailing bytes
 * mean the chunk table and the data disagree. The output is produced in one piece of the
 * chunk's size (`chunkSize`): node:zlib's default 16 KiB pieces cost one pool round trip each
 * (64 for a 1 MiB chunk), four times the CPU of the inflate itself; and `decodeToBuffer` hands
 * that piece over without another copy.
 */
import { constants, inflate } from 'node:zlib';
import { CodecError, type ChunkDecoder } from './codec.js';

interface InflateInfo {
  buffer: Buffer;
  engine: { bytesWritten: number };
}

function inflateWithInfo(input: Uint8Array, maxOutputLength: number): Promise<InflateInfo> {
  return new Promise((resolve, reject) => {
    // With `info: true` the callback gets the buffer and the engine (which counts the input consumed).
    // One piece a little larger than the most the chunk may hold: filled exactly, a piece would
    // make node:zlib allocate another one just to see the end of the stream.
    inflate(input, { maxOutputLength, chunkSize: maxOutputLength + constants.Z_MIN_CHUNK, info: true }, (err, result) => (err ? reject(err) : resolve(result as unknown as InflateInfo)));
  });
}

async function inflateWhole(input: Uint8Array, maxLength: number): Promise<Buffer> {
  if (maxLength === 0) throw new CodecError('zlib', 'nothing to decode into');
  let info: InflateInfo;
  try {
    info = await inflateWithInfo(input, maxLength);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ERR_BUFFER_TOO_LARGE') throw new CodecError('zlib', `the stream decodes to more than ${maxLength} bytes`);
    throw new CodecError('zlib', e.message);
  }
  const consumed = info.engine.bytesWritten;
  if (consumed !== input.length) throw new CodecError('zlib', `the stream ends after ${consumed} of ${input.length} bytes`);
  return info.buffer;
}

export const zlibDecoder: ChunkDecoder = {
  name: 'zlib',
  async decode(input, output) {
    const decoded = await inflateWhole(input, output.length);
    output.set(decoded);
    return decoded.length;
  },
  decodeToBuffer: inflateWhole,
};
