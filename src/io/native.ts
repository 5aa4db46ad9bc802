/**
 * The optional native fast paths: native/src/stackbd_native.c, shipped as source in the package
 * and built by node-gyp when `npm install` runs (native/build.mjs; Linux only, and never fails
 * the install). Everything works without them: callers check for null and use plain node:fs.
 * STACKBD_NO_NATIVE=1 turns them off (to compare, or to test the portable path).
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

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
  /**
   * Sends `message` as one datagram to the unix socket at `socketPath` ('@' first: abstract
   * namespace), without waiting: 0 or -errno. sd_notify(3) for NOTIFY_SOCKET. Missing from
   * older builds.
   */
  sdNotify?(socketPath: string, message: string): number;
}

export const Errno = { EAGAIN: 11, EWOULDBLOCK: 11, ENXIO: 6, EOPNOTSUPP: 95, ENOSYS: 38, EINVAL: 22 } as const;

/** What serving costs without the addon, for the one log line a server writes about it. */
export const WITHOUT_NATIVE = [
  'small cached reads go through the thread pool instead of being served inline',
  'RAW images have no hole map (base:allocation reports them as all data)',
  'zeroing and trimming RAW images write zeros instead of punching holes',
  'images are locked by their lock directories alone (no flock, which the kernel drops when a process dies)',
  'a client that went away is noticed only after its buffered requests are read',
] as const;

/** Where native/build.mjs puts the addon: dist/io/ and src/io/ are both two levels below. */
const ADDON = '../../native/build/Release/stackbd_native.node';
const BUILD_LOG = '../../native/build.log';

function isFastPaths(value: unknown): value is NativeFastPaths {
  const v = value as Partial<Record<keyof NativeFastPaths, unknown>> | null;
  return !!v && ['readCached', 'seekData', 'seekHole', 'punchHole', 'zeroRange', 'lockFile'].every((k) => typeof v[k as keyof NativeFastPaths] === 'function');
}

export type NativeStatus = { loaded: true; fastPaths: NativeFastPaths; path: string } | { loaded: false; reason: string };

/** Whether the addon loads here, and if not why not (for the server's log). */
export function nativeStatus(env: NodeJS.ProcessEnv = process.env): NativeStatus {
  if (env.STACKBD_NO_NATIVE === '1') return { loaded: false, reason: 'turned off by STACKBD_NO_NATIVE=1' };
  if (process.platform !== 'linux') return { loaded: false, reason: `the native fast paths are for Linux, this is ${process.platform}` };
  const path = fileURLToPath(new URL(ADDON, import.meta.url));
  let loaded: unknown;
  try {
    // require() caches the module: loading it for every file opened costs a map lookup.
    loaded = createRequire(import.meta.url)(path);
  } catch (err) {
    const log = fileURLToPath(new URL(BUILD_LOG, import.meta.url));
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'MODULE_NOT_FOUND') {
      const why = fs.existsSync(log) ? `its build at install failed (see ${log})` : 'it was not built at install';
      return { loaded: false, reason: `${why}; with python3, make and g++ present, "npm rebuild stackbd" (-g for a global install) builds it` };
    }
    return { loaded: false, reason: `${path} does not load: ${err instanceof Error ? err.message : String(err)}` };
  }
  if (!isFastPaths(loaded)) return { loaded: false, reason: `${path} is an older build without every function; rebuild it` };
  return { loaded: true, fastPaths: loaded, path };
}

/** The addon, or null when it is not built, not loadable, or turned off. */
export function loadNative(env: NodeJS.ProcessEnv = process.env): NativeFastPaths | null {
  const status = nativeStatus(env);
  return status.loaded ? status.fastPaths : null;
}
