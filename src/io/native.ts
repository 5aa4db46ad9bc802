/**
 * The optional native fast paths (package stackbd-native, built by node-gyp at install on
 * Linux). Everything works without them: callers check for null and use plain node:fs.
 * STACKBD_NO_NATIVE=1 turns them off (to compare, or to test the portable path).
 */
import { createRequire } from 'node:module';

export interface NativeFastPaths {
  /** preadv2(RWF_NOWAIT): bytes read, -EAGAIN when not cached, or -errno. Runs on this thread. */
  readCached(fd: number, buffer: Uint8Array, position: number): number;
  /** lseek(SEEK_DATA): where data starts at or after `offset`, or -errno (-ENXIO: none). */
  seekData(fd: number, offset: number): number;
  /** lseek(SEEK_HOLE): where a hole starts at or after `offset`, or -errno. */
  seekHole(fd: number, offset: number): number;
  /** fallocate(PUNCH_HOLE|KEEP_SIZE) on the thread pool: 0 or -errno. */
  punchHole(fd: number, offset: number, length: number): Promise<number>;
  /** fallocate(ZERO_RANGE|KEEP_SIZE) on the thread pool: 0 or -errno. */
  zeroRange(fd: number, offset: number, length: number): Promise<number>;
  /** flock without waiting: mode 0 unlock, 1 shared, 2 exclusive; 0, -EWOULDBLOCK or -errno. */
  lockFile(fd: number, mode: 0 | 1 | 2): number;
  /**
   * poll(POLLRDHUP) without waiting: 1 when a socket's peer has closed its side (its FIN has
   * arrived, even behind unread data), 0 when not, or -errno. Missing from older builds.
   */
  peerClosed?(fd: number): number;
}

export const Errno = { EAGAIN: 11, EWOULDBLOCK: 11, ENXIO: 6, EOPNOTSUPP: 95, ENOSYS: 38, EINVAL: 22 } as const;

function isFastPaths(value: unknown): value is NativeFastPaths {
  const v = value as Partial<Record<keyof NativeFastPaths, unknown>> | null;
  return !!v && ['readCached', 'seekData', 'seekHole', 'punchHole', 'zeroRange', 'lockFile'].every((k) => typeof v[k as keyof NativeFastPaths] === 'function');
}

/** The addon, or null when it is not built, not loadable, or turned off. */
export function loadNative(env: NodeJS.ProcessEnv = process.env): NativeFastPaths | null {
  if (env.STACKBD_NO_NATIVE === '1' || process.platform !== 'linux') return null;
  try {
    // require() caches the module: loading it for every file opened costs a map lookup.
    const loaded: unknown = createRequire(import.meta.url)('stackbd-native');
    return isFastPaths(loaded) ? loaded : null;
  } catch {
    return null;
  }
}
