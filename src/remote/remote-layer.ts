/**
 * A remote object as a read-only base layer: the Layer contract over a RemoteObject (how bytes
 * are fetched safely) and a BlockReader (blocks, coalescing, readahead, the memory cache).
 *
 * - Stores nothing locally; every byte is `data` (a remote object has no map of its holes).
 * - States: open; changed (the object was replaced: every read fails with EIO, see
 *   remote-object.ts); closed (connections released).
 * - Invariants: read-only, base-only (no UUIDs); `pin()` names the object's version (size and
 *   ETag, or size and Last-Modified), never its URL, which may carry a signature that changes.
 */
import { RequestError } from '../block/errors.js';
import type { Run } from '../block/runs.js';
import type { Layer, LayerDetails, ParentPin } from '../formats/layer.js';
import { BlockReader } from './block-reader.js';
import type { ResolvedRemoteOptions } from './options.js';
import type { RemoteObject, Validators } from './remote-object.js';
import { ReadOnlyBase } from '../formats/read-only-base.js';

/** The sector size the stack sees (children of a remote base are made with 512-byte blocks). */
export const REMOTE_SECTOR = 512;

export class RemoteLayer extends ReadOnlyBase implements Layer {
  override readonly blockSize = REMOTE_SECTOR;
  protected readonly what = 'a remote base';
  readonly size: number;
  private readonly reader: BlockReader;
  private readonly validators: Validators;

  constructor(
    readonly format: 'http' | 's3',
    private readonly object: RemoteObject,
    private readonly options: ResolvedRemoteOptions,
    private readonly closeTransport: () => Promise<void>,
  ) {
    super();
    this.validators = object.pinned;
    this.size = this.validators.size;
    this.reader = new BlockReader((offset, length) => object.readPieces(offset, length), {
      size: this.size,
      blockSize: options.blockSize,
      maxRequestBytes: options.maxRequestBytes,
      cacheBytes: options.cacheBytes,
      readaheadMaxBytes: options.readaheadMaxBytes,
    });
  }

  get path(): string {
    return this.object.display;
  }

  /** True when reads are conditional on the object's version (an ETag or Last-Modified). */
  get pinnable(): boolean {
    return this.validators.etag !== null || this.validators.lastModified !== null;
  }

  async pin(): Promise<ParentPin> {
    const v = this.validators;
    if (v.etag) return { size: v.size, etag: v.etag };
    if (v.lastModified) return { size: v.size, lastModified: v.lastModified };
    return { size: v.size };
  }

  async details(): Promise<LayerDetails> {
    const v = this.validators;
    return {
      remote: this.format,
      etag: v.etag,
      lastModified: v.lastModified,
      pinned: this.pinnable,
      ...(this.pinnable ? {} : { warning: 'the server gives no strong ETag and no Last-Modified: the base cannot be pinned, a replaced object would not be noticed' }),
      remoteBlockSize: this.options.blockSize,
      connections: this.options.connections,
      requests: { ...this.object.stats },
      fetches: { ...this.reader.stats },
    };
  }

  async map(offset: number, length: number): Promise<Run[]> {
    return length > 0 ? [{ offset, length, state: 'data' }] : [];
  }

  async read(buf: Buffer, offset: number): Promise<void> {
    const changed = this.object.changed;
    if (changed) {
      this.reader.forget();
      throw changed;
    }
    await this.reader.read(buf, offset);
  }

  close(): Promise<void> {
    return this.closeTransport();
  }
}
