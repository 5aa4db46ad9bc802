/**
 * Every failure stackbd can report has a type here. Two families:
 * - image errors, raised when a file is opened or inspected: they name the file and say what
 *   is wrong in one line a person can act on (DiskImageKit's error names);
 * - request errors, raised while serving: they carry the NBD error number the client gets.
 * `toNbdErrno` is the one place that turns any thrown value into an NBD error number.
 */

/** NBD error numbers on the wire (the values of Linux errno, fixed by the protocol). */
export const NbdErrno = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;
export type NbdErrnoName = keyof typeof NbdErrno;

/** Base class of every error stackbd raises on purpose. */
export class StackbdError extends Error {
  override name = 'StackbdError';
}

/** A problem with one image file; the message starts with the file name. */
export class ImageError extends StackbdError {
  override name = 'ImageError';
  constructor(
    readonly file: string,
    readonly detail: string,
  ) {
    super(`${file}: ${detail}`);
  }
}

/** The file breaks the rules of its format. */
export class CorruptedImageError extends ImageError {
  override name = 'CorruptedImageError';
}

/** Unknown magic or version, encrypted image, or a feature stackbd does not support. */
export class UnsupportedFormatError extends ImageError {
  override name = 'UnsupportedFormatError';
}

/** Layers that cannot be stacked in the order given (UUID mismatch, second cache, ...). */
export class IncompatibleStackingError extends ImageError {
  override name = 'IncompatibleStackingError';
}

/** A block count of zero, negative, or beyond what the format can map. */
export class InvalidBlockCountError extends ImageError {
  override name = 'InvalidBlockCountError';
}

/** Another program has the image open for writing, or has it open while we want to write it. */
export class ImageInUseError extends ImageError {
  override name = 'ImageInUseError';
}

/** A request that fails on its own: the client gets `errno` and the connection goes on. */
export class RequestError extends StackbdError {
  override name = 'RequestError';
  constructor(
    readonly errno: NbdErrnoName,
    message: string,
  ) {
    super(message);
  }
}

/** Node system error codes that have an NBD meaning other than EIO. */
const systemCodeToNbd: Readonly<Record<string, NbdErrnoName>> = {
  EPERM: 'EPERM',
  EACCES: 'EPERM',
  EROFS: 'EPERM',
  ENOSPC: 'ENOSPC',
  EDQUOT: 'ENOSPC',
  EFBIG: 'ENOSPC',
  EINVAL: 'EINVAL',
  ENOMEM: 'ENOMEM',
  EOVERFLOW: 'EOVERFLOW',
};

/** What of a request decides which error numbers its client may be sent. */
export interface ErrnoContext {
  /** The request carried FAST_ZERO. */
  fastZero?: boolean;
  /** The request carried DF (don't fragment). */
  df?: boolean;
}

/**
 * The NBD error number a client gets for any failure. Unknown failures are EIO. As the
 * protocol (and nbdkit) say: ENOTSUP only answers a FAST_ZERO request and EOVERFLOW only a DF
 * read; for any other request they become EINVAL.
 */
export function toNbdErrno(err: unknown, context: ErrnoContext = {}): number {
  const name = nbdErrnoName(err);
  if (name === 'ENOTSUP' && !context.fastZero) return NbdErrno.EINVAL;
  if (name === 'EOVERFLOW' && !context.df) return NbdErrno.EINVAL;
  return NbdErrno[name];
}

function nbdErrnoName(err: unknown): NbdErrnoName {
  if (err instanceof RequestError) return err.errno;
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (typeof code === 'string') {
    const name = systemCodeToNbd[code] ?? (code === 'ENOTSUP' || code === 'EOPNOTSUPP' ? 'ENOTSUP' : undefined);
    if (name) return name;
  }
  return 'EIO';
}

