/**
 * What every read-only base shares (qcow2, sparse bundle, DMG; http, S3 and NBD objects):
 * 512-byte blocks unless it says otherwise, no layer UUIDs or layer type, and a refusal
 * (EPERM) of every change. Such a base is written only through an overlay stacked on it.
 */
import { RequestError } from '../block/errors.js';

export abstract class ReadOnlyBase {
  readonly blockSize: number = 512;
  readonly readOnly = true;
  readonly layerUUID = null;
  readonly parentUUID = null;
  readonly layerType = null;
  abstract readonly path: string;
  /** How the refusal names the format: 'a qcow2 image', 'a sparse bundle'. */
  protected abstract readonly what: string;

  private refuse(): Promise<never> {
    return Promise.reject(new RequestError('EPERM', `${this.path}: ${this.what} is a read-only base`));
  }

  write(_buf: Buffer, _offset: number): Promise<void> {
    return this.refuse();
  }

  zero(_offset: number, _length: number): Promise<void> {
    return this.refuse();
  }

  discard(_offset: number, _length: number): Promise<void> {
    return this.refuse();
  }

  truncate(_size: number): Promise<void> {
    return this.refuse();
  }

  /** Nothing is ever written, so nothing needs flushing. */
  flush(): Promise<void> {
    return Promise.resolve();
  }
}
