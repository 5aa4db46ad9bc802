/**
 * DiskImageKit's model as a TypeScript API: a DiskImage is one image or a stack of them.
 *
 * - `DiskImage.create` makes a new standalone image (ASIF or RAW) and opens it read-write.
 * - `DiskImage.open` opens one image or a stack (bottom first) read-only or read-write. In a
 *   read-write stack only the top layer is opened for writing; the base and the middle layers
 *   are opened read-only and never change. A cache layer is opened for writing whenever its
 *   file allows it, in either mode: filling it does not change what the stack reads.
 * - `appending` puts a new or an existing layer on top and returns the resulting DiskImage;
 *   the layer that was the top is frozen (reopened read-only) first, so its layer UUID, which
 *   the new layer records as its parent UUID, can never change afterwards.
 * - `truncate` changes the top layer's block count, which sets the stack's size.
 */
import { IncompatibleStackingError, InvalidBlockCountError } from '../block/errors.js';
import type { Layer, LayerFormat, LayerType, WritableFormat } from '../formats/layer.js';
import { createImage, isWritableFormat, openImage } from '../formats/open-image.js';
import { findSameFile } from '../io/same-file.js';
import { displaySource, isRemoteSource, openRemote, type RemoteOptions } from '../remote/index.js';
import { checkChain, checkLink, linkOf, linksOf, parentRecordOf } from './chain.js';
import { toLayerSpec, type LayerSpec } from './layer-spec.js';
import type { SharedLayers } from './shared-layers.js';
import { Stack, type StackOptions } from './stack.js';

export type OpenMode = 'readOnly' | 'readWrite';
export type BlockSize = 512 | 4096;

export interface CreateOptions {
  path: string;
  format: WritableFormat;
  blockCount: number;
  blockSize?: BlockSize;
  /** Replace an existing file (refused otherwise). */
  overwrite?: boolean;
}

export interface OpenOptions {
  mode?: OpenMode;
  /**
   * With mode readWrite, serve a stack whose top is a cache layer read-only instead of refusing
   * it (a cache layer is never written through the stack).
   */
  readOnlyWhenCacheTop?: boolean;
  /**
   * Told what opens but cannot be checked (an overlay over a base it recorded nothing of), and
   * what a remote base wants known later (a lost upstream, one refused because it changed).
   */
  onWarning?: (message: string) => void;
  /**
   * Refuse read-only layers that another program has open for writing, instead of reading
   * them unlocked: for a stack that a new layer is about to record (append).
   */
  requireLocks?: boolean;
  /** Bound the cache layer's data to this many bytes, instead of the limit it records. */
  cacheLimit?: number;
  /** Refuse a qcow2 layer that names a backing file instead of opening its chain (a LayerSpec may say so for itself). */
  noBacking?: boolean;
  /** How a base given as a URL (http://, https://, s3://, nbd://...) is read. */
  remote?: RemoteOptions;
  stack?: StackOptions;
  /**
   * Open the read-only layers (all but the top) through this registry, so that stacks over one
   * base share one open of it (a server's exports).
   */
  shared?: SharedLayers;
}

/** A new ASIF layer (`type`), or an existing one (`existing: true`; its parent is checked). */
export type AppendSpec =
  | { path: string; type: LayerType; blockCount?: number; overwrite?: boolean; cacheLimit?: number }
  | { path: string; existing: true };

export interface LayerInfo {
  path: string;
  format: LayerFormat;
  layerType: LayerType | null;
  layerUUID: string | null;
  parentUUID: string | null;
  blockCount: number;
  blockSize: number;
  readOnly: boolean;
}

function describeLayer(layer: Layer): LayerInfo {
  return {
    path: layer.path,
    format: layer.format,
    layerType: layer.layerType,
    layerUUID: layer.layerUUID,
    parentUUID: layer.parentUUID,
    blockCount: layer.size / layer.blockSize,
    blockSize: layer.blockSize,
    readOnly: layer.readOnly,
  };
}

/** Opens a cache layer read-write if its file allows it, read-only otherwise. */
async function openCacheCapable(spec: LayerSpec, readOnly: boolean, requireLock = false, cacheLimit?: number): Promise<Layer> {
  const layer = await openImage(spec.path, { readOnly, format: spec.format, requireLock, cacheLimit, noBacking: spec.noBacking });
  if (!readOnly || layer.layerType !== 'cache') return layer;
  await layer.close();
  return openImage(spec.path, { readOnly: false, format: 'asif', cacheLimit }).catch(() => openImage(spec.path, { readOnly: true, format: 'asif' }));
}

/** Refuses a stack that lists one file twice (under two names or the same one). */
export async function refuseDuplicates(specs: readonly LayerSpec[]): Promise<void> {
  for (const [i, spec] of specs.entries()) {
    const earlier = await findSameFile(spec.path, specs.slice(0, i).map((s) => s.path));
    if (earlier !== undefined) {
      throw new IncompatibleStackingError(spec.path, earlier === spec.path ? 'is listed twice in the stack' : `is listed twice in the stack (also as ${earlier})`);
    }
  }
}

export class DiskImage {
  private constructor(
    readonly stack: Stack,
    private readonly requestedMode: OpenMode,
    private readonly stackOptions: StackOptions,
  ) {}

  static async create(options: CreateOptions): Promise<DiskImage> {
    await createImage(options.path, {
      format: options.format,
      blockCount: options.blockCount,
      blockSize: options.blockSize ?? 512,
      overwrite: options.overwrite ?? false,
    });
    return DiskImage.open({ path: options.path, format: options.format }, { mode: 'readWrite' });
  }

  /**
   * Opens one image or a stack, bottom first. A string is a path as it is; a LayerSpec may
   * name the format (otherwise the content is probed, and checked against the file's name).
   */
  static async open(sources: string | LayerSpec | ReadonlyArray<string | LayerSpec>, options: OpenOptions = {}): Promise<DiskImage> {
    const specs = (Array.isArray(sources) ? sources : [sources]).map((s: string | LayerSpec) => toLayerSpec(s, options.noBacking));
    if (specs.length === 0) throw new RangeError('DiskImage.open needs at least one image');
    await refuseDuplicates(specs);
    const mode = options.mode ?? 'readOnly';
    const layers: Layer[] = [];
    try {
      for (const [i, spec] of specs.entries()) {
        const top = i === specs.length - 1;
        const readOnly = !(top && mode === 'readWrite');
        if (isRemoteSource(spec.path)) {
          if (i > 0) throw new IncompatibleStackingError(displaySource(spec.path), `a remote base can only be the base of a stack, not a layer above ${layers[i - 1].path}`);
          layers.push(await openRemote(spec.path, { ...options.remote, onWarning: options.remote?.onWarning ?? options.onWarning }));
        } else if (readOnly && options.shared) {
          const open = (): Promise<Layer> => openCacheCapable(spec, true, options.requireLocks, options.cacheLimit);
          layers.push(await options.shared.acquire(spec.path, `${spec.format ?? 'probed'}:${options.requireLocks ? 'locked' : ''}`, open));
        } else layers.push(await openCacheCapable(spec, readOnly, options.requireLocks, options.cacheLimit));
      }
      const cacheTop = layers[layers.length - 1].layerType === 'cache';
      const warnings = checkChain(await linksOf(layers), mode === 'readWrite' && !(cacheTop && options.readOnlyWhenCacheTop));
      for (const w of warnings) options.onWarning?.(w);
    } catch (err) {
      await Promise.allSettled(layers.map((l) => l.close()));
      throw err;
    }
    const stackOptions = options.stack ?? {};
    return new DiskImage(new Stack(layers, { ...stackOptions, readOnly: mode === 'readOnly' || stackOptions.readOnly }), mode, stackOptions);
  }

  private get top(): Layer {
    return this.stack.top;
  }

  get format(): LayerFormat {
    return this.top.format;
  }

  get blockSize(): number {
    return this.top.blockSize;
  }

  get blockCount(): number {
    return this.top.size / this.top.blockSize;
  }

  get layerType(): LayerType | null {
    return this.top.layerType;
  }

  get layerUUID(): string | null {
    return this.top.layerUUID;
  }

  get parentUUID(): string | null {
    return this.top.parentUUID;
  }

  /** Read-write only when asked for and when the top can take writes (a cache top cannot). */
  get openMode(): OpenMode {
    return this.stack.readOnly ? 'readOnly' : 'readWrite';
  }

  get layers(): LayerInfo[] {
    return this.stack.layers.map(describeLayer);
  }

  /**
   * Puts a layer on top. This DiskImage hands its layers over to the returned one and must not
   * be used afterwards.
   */
  async appending(spec: AppendSpec): Promise<DiskImage> {
    const layers = [...this.stack.layers];
    const below = layers[layers.length - 1];
    let frozen = below;
    let added: Layer | null = null;
    const already = await findSameFile(spec.path, layers.map((l) => l.path));
    if (already !== undefined) throw new IncompatibleStackingError(spec.path, `is already a layer of this stack (${already})`);
    try {
      if (isRemoteSource(spec.path)) {
        throw new IncompatibleStackingError(displaySource(spec.path), `a remote base can only be the base of a stack, not a layer above ${below.path}`);
      }
      if ('existing' in spec) {
        added = await openCacheCapable({ path: spec.path, format: 'asif' }, this.requestedMode === 'readOnly');
        checkLink(await linkOf(below), await linkOf(added));
        if (added.layerType === 'cache' && layers.some((l) => l.layerType === 'cache')) {
          throw new IncompatibleStackingError(added.path, 'a stack takes one cache layer and it has one already');
        }
      } else {
        if (spec.type === 'cache' && layers.some((l) => l.layerType === 'cache')) {
          throw new IncompatibleStackingError(spec.path, 'a stack takes one cache layer and it has one already');
        }
        const blockCount = spec.blockCount ?? below.size / below.blockSize;
        if (spec.type === 'cache' && blockCount !== below.size / below.blockSize) {
          throw new InvalidBlockCountError(spec.path, 'a cache layer has the size of the layer below it');
        }
        // The new layer records the current identity of the layer below; make it durable first.
        if (!below.readOnly) await below.flush();
        await createImage(spec.path, {
          format: 'asif',
          blockCount,
          blockSize: below.format === 'asif' ? (below.blockSize as BlockSize) : 512,
          overwrite: spec.overwrite ?? false,
          layerType: spec.type,
          cacheLimit: spec.type === 'cache' ? (spec.cacheLimit ?? null) : null,
          ...(await parentRecordOf(below)),
        });
        added = await openCacheCapable({ path: spec.path, format: 'asif' }, this.requestedMode === 'readOnly' && spec.type !== 'cache');
      }
      if (!below.readOnly && below.layerType !== 'cache' && isWritableFormat(below.format)) {
        // Freeze the old top: from now on it is a lower layer and must never change.
        await below.close();
        frozen = await openImage(below.path, { readOnly: true, format: below.format });
      }
    } catch (err) {
      await added?.close().catch(() => undefined);
      throw err;
    }
    layers[layers.length - 1] = frozen;
    layers.push(added);
    const readOnly = this.requestedMode === 'readOnly' || this.stackOptions.readOnly;
    return new DiskImage(new Stack(layers, { ...this.stackOptions, readOnly }), this.requestedMode, this.stackOptions);
  }

  /** Changes the block count of the top layer (the stack's size). The filesystem inside is not resized. */
  async truncate(blockCount: number): Promise<void> {
    const top = this.top;
    if (!Number.isSafeInteger(blockCount) || blockCount <= 0) {
      throw new InvalidBlockCountError(top.path, `block count ${blockCount} is not a positive whole number`);
    }
    if (top.layerType === 'cache') throw new IncompatibleStackingError(top.path, 'a cache layer cannot be truncated: it has the size of the layer below');
    if (top.readOnly) throw new IncompatibleStackingError(top.path, 'the image is open read-only');
    await top.truncate(blockCount * top.blockSize);
  }

  flush(): Promise<void> {
    return this.stack.flush();
  }

  close(): Promise<void> {
    return this.stack.close();
  }
}
