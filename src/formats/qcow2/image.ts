/**
 * A qcow2 image as a read-only base layer, its backing chain included.
 *
 * - Stores nothing new: reads the active L1/L2 tables (tables.ts) and data, compressed
 *   (compressed.ts) and zero clusters; internal snapshots and refcounts are never read.
 * - States a range can have (cluster-walk.ts): data or compressed → `data`; zero flag or zero
 *   subcluster → `zero`; unallocated → whatever the backing file says there (its own map),
 *   `absent` past the backing file's end or when there is no backing file.
 * - Size: the header's virtual size in whole 512-byte sectors. QEMU 7.2 shows a qcow2 image
 *   whose header size is not a multiple of 512 as that many whole sectors (rounded down:
 *   `qemu-img info` and `convert` drop the partial sector), and this layer does the same so
 *   both serve the same disk.
 * - Invariants: nothing is ever written (writes, zeroes, discards and truncation are EPERM);
 *   the backing layers are opened by this layer and closed with it.
 */
import fs from 'node:fs/promises';
import { pushRun, type Run } from '../../block/runs.js';
import type { BlockFile } from '../../io/block-file.js';
import type { Layer, LayerDetails, ParentPin } from '../layer.js';
import { ReadOnlyBase } from '../read-only-base.js';
import type { BackingLink } from './backing.js';
import { walkClusters, type Segment } from './cluster-walk.js';
import type { CompressedClusters } from './compressed.js';
import type { CompressionType } from './features.js';
import { hasBit, Incompatible, type Qcow2Header } from './header.js';
import type { ClusterTables } from './tables.js';
import { clusterUsage } from './usage.js';

export const QCOW2_BLOCK_SIZE = 512;

/** The size a client sees: whole sectors of the header's virtual size (see the note above). */
export function qcow2DeviceSize(virtualSize: number): number {
  return Math.floor(virtualSize / QCOW2_BLOCK_SIZE) * QCOW2_BLOCK_SIZE;
}

export interface Qcow2Parts {
  readonly file: BlockFile;
  readonly header: Qcow2Header;
  readonly compression: CompressionType;
  readonly tables: ClusterTables;
  readonly compressed: CompressedClusters;
  readonly backing: { readonly layer: Layer; readonly link: BackingLink } | null;
}

export class Qcow2Image extends ReadOnlyBase implements Layer {
  readonly format = 'qcow2' as const;
  protected readonly what = 'a qcow2 image';
  readonly size: number;
  private readonly file: BlockFile;
  private readonly tables: ClusterTables;
  private readonly compressed: CompressedClusters;
  private readonly backing: Layer | null;

  constructor(private readonly parts: Qcow2Parts) {
    super();
    this.file = parts.file;
    this.tables = parts.tables;
    this.compressed = parts.compressed;
    this.backing = parts.backing?.layer ?? null;
    this.size = qcow2DeviceSize(parts.header.virtualSize);
  }

  get path(): string {
    return this.file.path;
  }

  /** The backing files below this image, nearest first. */
  backingChain(): BackingLink[] {
    const b = this.parts.backing;
    if (!b) return [];
    return [b.link, ...(b.layer instanceof Qcow2Image ? b.layer.backingChain() : [])];
  }

  /** Size, the file's modification time and inode, and the same of every backing file. */
  async pin(): Promise<ParentPin> {
    const st = await this.file.stat?.();
    const own: Record<string, string | number> = st ? { size: this.size, mtime: st.mtimeNs, inode: st.inode } : { size: this.size };
    if (this.backing) own.backing = JSON.stringify(await this.backing.pin());
    return own;
  }

  async details(): Promise<LayerDetails> {
    const h = this.parts.header;
    const g = this.tables.geometry;
    const chain = this.backingChain();
    const fileSize = await this.file.size();
    let storedSize = fileSize;
    for (const link of chain) storedSize += (await fs.stat(link.path).catch(() => null))?.size ?? 0;
    return {
      virtualSize: this.size,
      // This file and its backing files: what the layer's bytes take on disk.
      storedSize,
      fileSize,
      clusters: await clusterUsage(this.tables, this.size, this.parts.compression),
      version: h.version,
      compat: h.version === 2 ? '0.10' : '1.1',
      // Only when the header's size is not whole sectors (the layer's size drops the rest).
      ...(h.virtualSize !== this.size ? { headerVirtualSize: h.virtualSize } : {}),
      clusterSize: h.clusterSize,
      compressionType: this.parts.compression,
      extendedL2: g.extendedL2,
      dirty: hasBit(h.incompatibleFeatures, Incompatible.dirty),
      corrupt: hasBit(h.incompatibleFeatures, Incompatible.corrupt),
      snapshots: h.nbSnapshots,
      backingChain: chain.map((l) => ({ name: l.name, path: l.path, format: l.format, formatFrom: l.formatFrom })),
    };
  }

  async map(offset: number, length: number, maxRuns?: number): Promise<Run[]> {
    const runs: Run[] = [];
    const inside = Math.max(0, Math.min(length, this.size - offset));
    const segments = await walkClusters(this.tables, offset, inside, maxRuns);
    for (const s of segments) {
      if (s.kind === 'unallocated') await this.mapBelow(runs, s.offset, s.length);
      else pushRun(runs, s.offset, s.length, s.kind === 'zero' ? 'zero' : 'data');
    }
    const last = segments[segments.length - 1];
    // With maxRuns the walk may have stopped early: the runs then cover a prefix.
    if (last && last.offset + last.length < offset + inside) return runs;
    pushRun(runs, offset + inside, length - inside, 'absent');
    return runs;
  }

  /** Unallocated here: the backing file's own map, `absent` past its end. */
  private async mapBelow(runs: Run[], offset: number, length: number): Promise<void> {
    const inside = this.backing ? Math.max(0, Math.min(length, this.backing.size - offset)) : 0;
    if (inside > 0) for (const r of await this.backing!.map(offset, inside)) pushRun(runs, r.offset, r.length, r.state);
    pushRun(runs, offset + inside, length - inside, 'absent');
  }

  async read(buf: Buffer, offset: number): Promise<void> {
    const inside = Math.max(0, Math.min(buf.length, this.size - offset));
    if (inside < buf.length) buf.fill(0, inside);
    if (inside === 0) return;
    const segments = await walkClusters(this.tables, offset, inside);
    if (segments.length === 1 && segments[0].kind === 'data') return this.file.read(inside === buf.length ? buf : buf.subarray(0, inside), segments[0].host);
    const work: Promise<void>[] = [];
    for (const s of segments) {
      const part = buf.subarray(s.offset - offset, s.offset - offset + s.length);
      if (s.kind === 'data') work.push(this.file.read(part, s.host));
      else if (s.kind === 'zero') part.fill(0);
      else if (s.kind === 'compressed') work.push(this.readCompressed(part, s));
      else work.push(this.readBelow(part, s.offset));
    }
    await Promise.all(work);
  }

  private async readCompressed(part: Buffer, s: Segment): Promise<void> {
    const clusterSize = this.tables.geometry.clusterSize;
    const start = Math.floor(s.offset / clusterSize) * clusterSize;
    const cluster = await this.compressed.cluster(s.hi, s.lo, start);
    cluster.copy(part, 0, s.offset - start, s.offset - start + s.length);
  }

  private async readBelow(part: Buffer, offset: number): Promise<void> {
    const inside = this.backing ? Math.max(0, Math.min(part.length, this.backing.size - offset)) : 0;
    if (inside < part.length) part.fill(0, inside);
    if (inside > 0) await this.backing!.read(inside === part.length ? part : part.subarray(0, inside), offset);
  }

  async close(): Promise<void> {
    try {
      await this.backing?.close();
    } finally {
      await this.file.close();
    }
  }
}
