/**
 * bzip2 chunks (DMG type 0x80000006, UDBZ): each chunk is one complete `BZh` stream, decoded
 * by the seek-bzip package (MIT, pure JavaScript, synchronous: a 1 MiB chunk holds the event
 * loop for tens of milliseconds, which is acceptable for a format this rare).
 *
 * The package is given our own byte streams instead of buffers: reading past the end of the
 * input and writing past the end of the output both stop decoding at once (its own buffer
 * wrappers would read undefined as zero bits and silently drop excess output), so a truncated
 * or hostile stream ends quickly in a CodecError.
 */
import { createRequire } from 'node:module';
import { CodecError, type ChunkDecoder } from './codec.js';

interface ByteSource {
  readByte(): number;
  read(buf: Uint8Array, at: number, length: number): number;
  eof(): boolean;
  seek(pos: number): void;
}

interface ByteSink {
  writeByte(byte: number): void;
}

interface SeekBzip {
  decode(input: ByteSource, output: ByteSink): void;
}

const bunzip = createRequire(import.meta.url)('seek-bzip') as SeekBzip;

/** Thrown by our streams to stop the package; turned into a CodecError below. */
class StreamLimit extends Error {}

function source(input: Uint8Array): ByteSource {
  let pos = 0;
  return {
    readByte() {
      if (pos >= input.length) throw new StreamLimit('the stream is truncated');
      return input[pos++];
    },
    read(buf, at, length) {
      const n = Math.min(length, input.length - pos);
      if (n <= 0) return -1;
      buf.set(input.subarray(pos, pos + n), at);
      pos += n;
      return n;
    },
    eof: () => pos >= input.length,
    seek(p) {
      pos = p;
    },
  };
}

export const bzip2Decoder: ChunkDecoder = {
  name: 'bzip2',
  async decode(input, output) {
    let written = 0;
    const sink: ByteSink = {
      writeByte(byte) {
        if (written >= output.length) throw new StreamLimit(`the stream decodes to more than ${output.length} bytes`);
        output[written++] = byte;
      },
    };
    try {
      bunzip.decode(source(input), sink);
    } catch (err) {
      throw new CodecError('bzip2', err instanceof Error ? err.message : String(err));
    }
    return written;
  },
};
