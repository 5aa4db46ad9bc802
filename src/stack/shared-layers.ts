/**
 * Read-only layers opened once per process and shared by every stack that uses them (a server
 * with hundreds of exports over one base opens the base once, holds one fd and one shared
 * lock for it, and keeps one copy of its metadata and caches).
 *
 * - Stores: open layers keyed by file identity (device and inode, as stat says when the layer is
 *   asked for) and the options that change what opens (format, requireLock), each with a count
 *   of the handles given out; an open under way is shared by those who ask meanwhile.
 * - States of an entry: opening → open (count ≥ 1) → closed (the last handle closed it, the
 *   entry is gone; the next request opens the file anew).
 * - Invariants: only layers that are read-only once open are shared (a cache layer opened for
 *   writing is handed out unshared); a handle is the layer as the Layer contract sees it, except
 *   that closing it only gives the handle back (a second close does nothing); the layer itself
 *   is closed when its last handle is. The owner (the server) makes one registry and passes it
 *   down; nothing is process-global.
 */
import fs from 'node:fs/promises';
import type { Run } from '../block/runs.js';
import type { Layer, LayerDetails, LayerFormat, LayerType, ParentPin, WriteOptions, ZeroOptions } from '../formats/layer.js';

interface Entry {
  /** The layer, or null when it turned out not shareable (then each asker opens its own). */
  readonly layer: Promise<Layer | null>;
  handles: number;
}

/** One user's view of a shared layer: everything goes to the layer, but close only releases. */
class SharedHandle implements Layer {
  private released = false;
  readonly readRuns?: (buf: Buffer, offset: number) => Promise<Run[]>;
  readonly details?: () => Promise<LayerDetails>;

  constructor(
    private readonly target: Layer,
    private readonly release: () => Promise<void>,
  ) {
    const { readRuns, details } = target;
    if (readRuns) this.readRuns = (buf, offset) => readRuns.call(target, buf, offset);
    if (details) this.details = () => details.call(target);
  }

  get path(): string {
    return this.target.path;
  }
  get format(): LayerFormat {
    return this.target.format;
  }
  get blockSize(): number {
    return this.target.blockSize;
  }
  get size(): number {
    return this.target.size;
  }
  get readOnly(): boolean {
    return this.target.readOnly;
  }
  get layerUUID(): string | null {
    return this.target.layerUUID;
  }
  get parentUUID(): string | null {
    return this.target.parentUUID;
  }
  get layerType(): LayerType | null {
    return this.target.layerType;
  }
  get parentPin(): ParentPin | null | undefined {
    return this.target.parentPin;
  }
  pin(): Promise<ParentPin | null> {
    return this.target.pin();
  }
  map(offset: number, length: number, maxRuns?: number): Promise<Run[]> {
    return this.target.map(offset, length, maxRuns);
  }
  read(buf: Buffer, offset: number): Promise<void> {
    return this.target.read(buf, offset);
  }
  write(buf: Buffer, offset: number, options?: WriteOptions): Promise<void> {
    return this.target.write(buf, offset, options);
  }
  zero(offset: number, length: number, options?: ZeroOptions): Promise<void> {
    return this.target.zero(offset, length, options);
  }
  discard(offset: number, length: number, options?: WriteOptions): Promise<void> {
    return this.target.discard(offset, length, options);
  }
  flush(): Promise<void> {
    return this.target.flush();
  }
  truncate(size: number): Promise<void> {
    return this.target.truncate(size);
  }
  close(): Promise<void> {
    if (this.released) return Promise.resolve();
    this.released = true;
    return this.release();
  }
}

export class SharedLayers {
  private readonly entries = new Map<string, Entry>();

  /** Open layers (for tests and diagnostics). */
  get size(): number {
    return this.entries.size;
  }

  /**
   * A handle on the read-only layer at `path`, opened by `open` unless one with the same
   * identity and `options` is open already. A layer that `open` returns writable is not shared:
   * it comes back as it is, and the caller owns it.
   */
  async acquire(path: string, options: string, open: () => Promise<Layer>): Promise<Layer> {
    const st = await fs.stat(path).catch(() => null);
    // Nothing to key on (the open will say what is wrong): no sharing.
    if (!st) return open();
    const key = `${st.dev}:${st.ino}:${options}`;
    let entry = this.entries.get(key);
    if (!entry) {
      const opening = open();
      const created: Entry = {
        handles: 0,
        layer: opening.then(
          (layer) => {
            if (layer.readOnly) return layer;
            // Not shareable: the first asker keeps it; the entry goes.
            this.entries.delete(key);
            return null;
          },
          (err: unknown) => {
            this.entries.delete(key);
            throw err;
          },
        ),
      };
      entry = created;
      this.entries.set(key, created);
      const layer = await created.layer.catch(() => null);
      if (layer === null) return opening;
      created.handles++;
      return new SharedHandle(layer, () => this.release(key, created, layer));
    }
    const shared = entry;
    shared.handles++;
    const layer = await shared.layer.catch((err: unknown) => {
      shared.handles--;
      throw err;
    });
    if (layer === null) {
      shared.handles--;
      return open();
    }
    return new SharedHandle(layer, () => this.release(key, shared, layer));
  }

  private async release(key: string, entry: Entry, layer: Layer): Promise<void> {
    entry.handles--;
    if (entry.handles > 0) return;
    if (this.entries.get(key) === entry) this.entries.delete(key);
    await layer.close();
  }
}
