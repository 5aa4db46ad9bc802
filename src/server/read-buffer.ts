/**
 * Reading a connection into one fixed buffer instead of a new Buffer per read.
 *
 * node:net gives every read its own 64 KiB Buffer, memory outside V8's heap that only garbage
 * collection frees: at 1 GiB/s of writes that is 16,000 Buffers a second, and V8's collector
 * ended up using as much CPU as the server itself. A socket made with `onread` instead reads
 * into a buffer we own and hands over the bytes synchronously; the session copies out what it
 * keeps before the callback returns, so one buffer serves every connection of a server.
 *
 * A large payload needs no copy at all: while one is being received, the next read goes
 * straight into the rest of its buffer (onread's buffer may be a function, asked after every
 * read); that view ends with the payload, so the next request's header comes through the shared
 * buffer again, in a short read (64 KiB) when the payload before was read in place.
 *
 * Node offers `onread` only to sockets it creates for a handle, so an accepted connection's
 * handle (the documented-in-practice `_handle` of a socket accepted with pauseOnConnect, not
 * yet read from) is moved into a new socket. If that is not possible the caller falls back to
 * the accepted socket as it is.
 */
import net from 'node:net';

interface HandleHolder {
  _handle?: unknown;
}

/** The read that follows a payload read in place: enough for a header and some of what
 * follows, little to copy if that is a large payload. */
const SHORT_READ = 64 * 1024;

/** Where a connection's bytes go. */
export interface ReadSink {
  /** Bytes read into the shared buffer: valid only during the call. */
  chunk(bytes: Buffer): void;
  /** A buffer of the connection's own for the next read instead of the shared one, or null. */
  target(): Buffer | null;
  /** `n` bytes were read into `target`, the buffer `target()` returned. */
  direct(target: Buffer, n: number): void;
}

/**
 * A socket reading `accepted`'s connection into `buffer`, or into the buffer `sink.target()`
 * names after each read (a large payload's own memory, so that it is not copied). Null when
 * the connection cannot be moved; `accepted` is then untouched.
 */
export function adoptWithReadBuffer(accepted: net.Socket, buffer: Buffer, sink: ReadSink): net.Socket | null {
  const holder = accepted as unknown as HandleHolder;
  const handle = holder._handle;
  if (!handle || typeof handle !== 'object') return null;
  // `handle` is accepted by the constructor but missing from @types/node.
  const short = buffer.subarray(0, Math.min(buffer.length, SHORT_READ));
  let lastWasDirect = false;
  const options: net.SocketConstructorOpts & net.ConnectOpts & { handle: unknown } = {
    handle,
    onread: {
      // Called once when the socket is made, then after every read: the next read's buffer.
      buffer: () => {
        const target = sink.target();
        if (target) {
          lastWasDirect = true;
          return target;
        }
        // Right after a payload read in place, the next header is most likely followed by
        // another large payload: a short read takes the header and copies little of that
        // payload, whose rest is then read in place too.
        const next = lastWasDirect ? short : buffer;
        lastWasDirect = false;
        return next;
      },
      callback: (n: number, buf: Uint8Array): boolean => {
        if (buf === buffer || buf === short) sink.chunk(Buffer.from(buf.buffer, buf.byteOffset, n));
        else sink.direct(buf as Buffer, n);
        return true;
      },
    },
  };
  let adopted: net.Socket;
  try {
    adopted = new net.Socket(options as net.SocketConstructorOpts);
  } catch {
    return null;
  }
  // The accepted socket no longer owns the connection: destroying it must not close it.
  holder._handle = null;
  accepted.destroy();
  return adopted;
}
