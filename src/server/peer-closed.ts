/**
 * Whether a connection's peer has closed its side, asked of the kernel rather than learned from
 * the stream. Node reports the end of a stream only after every byte before it has been read,
 * possibly several event-loop turns later; the kernel knows as soon as the FIN arrives. Sessions
 * ask this when they decide whether requests that were waiting in the kernel may still run.
 */
import type { Socket } from 'node:net';
import { loadNative, type NativeFastPaths } from '../io/native.js';

/** true: the peer is gone; false: it is not; null: cannot tell (no native addon, no fd). */
export type PeerClosedProbe = (socket: Socket) => boolean | null;

interface FdHolder {
  _handle?: { fd?: unknown } | null;
}

export function makePeerClosedProbe(native: NativeFastPaths | null = loadNative()): PeerClosedProbe {
  const peerClosed = native?.peerClosed?.bind(native);
  return (socket) => {
    // A TCP or pipe handle exposes its descriptor as `fd` on Linux (not part of Node's types).
    const fd = (socket as unknown as FdHolder)._handle?.fd;
    if (!peerClosed || typeof fd !== 'number' || fd < 0) return null;
    const answer = peerClosed(fd);
    return answer < 0 ? null : answer === 1;
  };
}
