/**
 * Reading a connection into one fixed buffer instead of a new Buffer per read.
 *
 * node:net gives every read its own 64 KiB Buffer, memory outside V8's heap that only garbage
 * collection frees: at 1 GiB/s of writes that is 16,000 Buffers a second, and V8's collector
 * ended up using as much CPU as the server itself. A socket made with `onread` instead reads
 * into a buffer we own and hands over the bytes synchronously; the session copies out what it
 * keeps before the callback returns, so one buffer serves every connection of a server.
 *
 * Node offers `onread` only to sockets it creates for a handle, so an accepted connection's
 * handle (the documented-in-practice `_handle` of a socket accepted with pauseOnConnect, not
 * yet read from) is moved into a new socket. If that is not possible the caller falls back to
 * the accepted socket as it is.
 */
import net from 'node:net';

export type ChunkHandler = (chunk: Buffer) => void;

interface HandleHolder {
  _handle?: unknown;
}

/**
 * A socket reading `accepted`'s connection into `buffer`; each read's bytes go to `onChunk`
 * (they are only valid during the call). Null when the connection cannot be moved; `accepted`
 * is then untouched.
 */
export function adoptWithReadBuffer(accepted: net.Socket, buffer: Buffer, onChunk: ChunkHandler): net.Socket | null {
  const holder = accepted as unknown as HandleHolder;
  const handle = holder._handle;
  if (!handle || typeof handle !== 'object') return null;
  // `handle` is accepted by the constructor but missing from @types/node.
  const options: net.SocketConstructorOpts & net.ConnectOpts & { handle: unknown } = {
    handle,
    onread: {
      buffer,
      callback: (n: number, buf: Uint8Array): boolean => {
        onChunk(Buffer.from(buf.buffer, buf.byteOffset, n));
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
