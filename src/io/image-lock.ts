/**
 * The lock an open image holds, taken before anything is written or truncated: exclusive for
 * an image opened for writing, shared for one opened read-only, so that no two programs write
 * one image and none writes an image that others read (a shared base under running VMs).
 *
 * Two mechanisms, both used when both are there: flock through the native addon (the kernel
 * drops it when a process dies) and a lock directory beside the image (lock-dir.ts), which
 * needs nothing native and is seen by every stackbd on the host whatever its install. A reader
 * that finds a writer goes on without a lock: inspecting a served image is fine, writing an
 * image from two places is not; with `requireLock` (a layer about to be recorded by a new
 * child) the reader is refused instead.
 */
import { ImageInUseError } from '../block/errors.js';
import { describeHolders, tryLockDir, type LockMode } from './lock-dir.js';
import { Errno, type NativeFastPaths } from './native.js';

/** Undoes the lock (the file descriptor is closed by the caller). */
export type LockRelease = () => Promise<void>;

const NO_LOCK: LockRelease = () => Promise.resolve();

/**
 * Locks `path`, open as `fd`, in `mode`; throws ImageInUseError when a writer cannot have it.
 * The caller closes `fd` when this throws.
 */
export async function lockImage(path: string, fd: number, mode: LockMode, native: NativeFastPaths | null, requireLock = false): Promise<LockRelease> {
  const exclusive = mode === 'exclusive';
  let flocked = false;
  if (native) {
    const result = native.lockFile(fd, exclusive ? 2 : 1);
    if (result === -Errno.EWOULDBLOCK) {
      if (exclusive) throw inUse(path, 'another program (or another open of it here) has it open');
      if (requireLock) throw beingWritten(path, 'another program (or another open of it here)');
      // A reader beside a writer: no lock of its own.
      return NO_LOCK;
    }
    flocked = result === 0;
  }
  const attempt = await tryLockDir(path, mode);
  const unflock = (): void => {
    if (flocked) native?.lockFile(fd, 0);
  };
  switch (attempt.kind) {
    case 'locked':
      return attempt.release;
    case 'unlocked':
      unflock();
      if (requireLock) throw beingWritten(path, describeHolders([attempt.holder]));
      return NO_LOCK;
    case 'busy':
      unflock();
      throw inUse(
        path,
        `it is held by ${describeHolders(attempt.holders)} (lock entries ${attempt.entries.join(', ')}; remove one only if that process no longer runs)`,
      );
    case 'unavailable':
      // Read-only media or a directory we may not write: readers need no lock there; a writer
      // may go on only under flock.
      if (exclusive && !flocked) {
        throw inUse(path, `it cannot be locked for writing (${attempt.reason}); stackbd needs to create its lock directory beside the image`);
      }
      return NO_LOCK;
  }
}

function beingWritten(path: string, by: string): ImageInUseError {
  return new ImageInUseError(path, `is open for writing by ${by}: it cannot be the base of a new layer while it may change`);
}

function inUse(path: string, why: string): ImageInUseError {
  return new ImageInUseError(path, `is in use, so it cannot be opened for writing now: ${why}`);
}
