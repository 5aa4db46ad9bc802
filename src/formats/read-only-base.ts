/**
 * What every read-only base format (qcow2, sparse bundle) shares: 512-byte blocks, no layer
 * UUIDs or layer type, and a refusal (EPERM) of every change. Such a base is written only
 * through an overlay stacked on it.
 */
import { RequestError } from '../block/errors.js';

export abstract class ReadOnlyBase {
  readonly blockSize = 512;
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

  write(): Promise<void> {
    return this.refuse();
  }

  zero(): Promise<void> {
    return this.refuse();
  }

  discard(): Promise<void> {
    return this.refuse();
  }

  truncate(): Promise<void> {
    return this.refuse();
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }
}
