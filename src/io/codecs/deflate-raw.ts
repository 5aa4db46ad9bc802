/**
 * Raw deflate (RFC 1951, no zlib or gzip wrapper): qcow2's default compression ("zlib" in the
 * header's compression_type 0). node:zlib does the work.
 *
 * A compressed qcow2 cluster is stored in whole 512-byte sectors, so its input usually ends
 * with bytes that belong to the next cluster, or with a stream whose end marker is not needed
 * to fill the output: decoding stops at the end of the stream or when the input runs out
 * (a sync flush, not an error), and the caller checks that the output is as long as it wants.
 * Output beyond `output.length` is refused before it is produced (maxOutputLength), so a
 * hostile stream cannot make a large allocation.
 */
import zlib from 'node:zlib';
import { CodecError, type ChunkDecoder } from './codec.js';

/** Clusters at most this large are inflated on the event loop: a pool hand-off costs more. */
const INLINE_MAX = 256 * 1024;

function options(output: Uint8Array): zlib.ZlibOptions {
  // One output piece of the cluster's size: the default 16 KiB pieces cost a pool round trip
  // (or a copy, inline) each.
  return { finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: Math.max(1, output.length), chunkSize: Math.max(zlib.constants.Z_MIN_CHUNK, output.length) };
}

function deliver(result: Buffer, output: Uint8Array): number {
  output.set(result);
  return result.length;
}

function failure(err: unknown): CodecError {
  return new CodecError('deflate', err instanceof RangeError ? 'the stream decodes to more bytes than the cluster holds' : (err as Error).message);
}

export const rawDeflateDecoder: ChunkDecoder = {
  name: 'deflate',
  decode(input: Uint8Array, output: Uint8Array): Promise<number> {
    if (output.length <= INLINE_MAX) {
      try {
        return Promise.resolve(deliver(zlib.inflateRawSync(input, options(output)), output));
      } catch (err) {
        return Promise.reject(failure(err));
      }
    }
    return new Promise((resolve, reject) => {
      zlib.inflateRaw(input, options(output), (err, result) => (err ? reject(failure(err)) : resolve(deliver(result, output))));
    });
  },
};
