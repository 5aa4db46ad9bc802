/**
 * LZMA chunks of DMG (type 0x80000008, ULMO), which hold a complete .xz container stream (not
 * a bare LZMA or .lzma stream), decoded by the xz-decompress package (MIT; xz-embedded compiled
 * to WebAssembly, no native code). It decodes CRC32, CRC64 and unchecked streams with any
 * preset (dictionaries up to 64 MiB); streams with a SHA-256 check are refused (CodecError).
 *
 * The package serialises its decoders behind a lock that is released only when a stream ends,
 * fails or is cancelled, so every stream is read to its end or cancelled here: one abandoned
 * stream would stall every later decode. Output past the declared size cancels the stream.
 */
import { createRequire } from 'node:module';
import { CodecError, type ChunkDecoder } from './codec.js';

interface XzModule {
  XzReadableStream: new (compressed: ReadableStream<Uint8Array>) => ReadableStream<Uint8Array>;
}

const { XzReadableStream } = createRequire(import.meta.url)('xz-decompress') as XzModule;

/** xz-embedded's return codes, for messages. */
const XZ_CODES: Readonly<Record<string, string>> = {
  '2': 'unsupported integrity check',
  '3': 'out of memory',
  '4': 'dictionary larger than allowed',
  '5': 'not an .xz stream',
  '6': 'unsupported options (a SHA-256 check, or a filter xz-embedded lacks)',
  '7': 'damaged data',
  '8': 'the stream is truncated or followed by other bytes',
};

function describe(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const code = /error code (\d+)/.exec(message)?.[1];
  return (code && XZ_CODES[code]) ?? message;
}

export const xzDecoder: ChunkDecoder = {
  name: 'xz',
  async decode(input, output) {
    // An empty input makes the package read a property of null; say what it is instead.
    if (input.length === 0) throw new CodecError('xz', 'the stream is empty');
    const compressed = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(input);
        controller.close();
      },
    });
    const reader = new XzReadableStream(compressed).getReader();
    let written = 0;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return written;
        if (written + value.length > output.length) {
          await reader.cancel();
          throw new CodecError('xz', `the stream decodes to more than ${output.length} bytes`);
        }
        output.set(value, written);
        written += value.length;
      }
    } catch (err) {
      if (err instanceof CodecError) throw err;
      throw new CodecError('xz', describe(err));
    }
  },
};
