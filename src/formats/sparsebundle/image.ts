/**
 * A macOS sparse bundle (spec/udif.md §9) as a read-only base layer: a directory whose
 * `bands/` hold the disk in pieces of `band-size` bytes, band n holding [n × band, (n+1) × band).
 *
 * - States: a band with no file maps as `absent` (nothing is stored there; at the bottom of a
 *   stack that reads as zeros, which is what macOS reads). `absent` rather than `zero`: the
 *   bundle stores nothing for the range, the same answer a qcow2 or ASIF base gives for a
 *   never-written range, and it tells allocation maps (qemu:allocation-depth, `stackbd map`)
 *   that nothing is there. In a band file, its holes map as `zero` and its data as `data`
 *   where the file system can tell (the native addon's SEEK_HOLE, as for RAW), otherwise all
 *   `data`; past a short band file's end is `absent`, like a missing band.
 * - Size: the plist's `size` in whole 512-byte sectors (a partial last sector is dropped).
 * - Invariants: the set of band files is listed once at open (the bundle is read-only here; the
 *   pin changes if bands come or go); a band file longer than `band-size` is read only up to
 *   `band-size`; at most BandFiles.capacity band files are open when idle; nothing is written.
 */
import { pushRun, type Run } from '../../block/runs.js';
import type { Layer, LayerDetails, ParentPin } from '../layer.js';
import { ReadOnlyBase } from '../read-only-base.js';
import type { BandFiles } from './band-files.js';
import type { BundleInfo } from './info-plist.js';

export const SPARSEBUNDLE_BLOCK_SIZE = 512;

export interface SparseBundleParts {
  readonly path: string;
  readonly info: BundleInfo;
  /** Indexes of the bands that have a file. */
  readonly present: ReadonlySet<number>;
  readonly bands: BandFiles;
  /** What pin() reports, read now. */
  readonly identity: () => Promise<ParentPin>;
  /** The bytes of the bundle's files, read now. */
  readonly usage: () => Promise<BundleUsage>;
}

/** What a sparse bundle takes on disk. */
export interface BundleUsage {
  /** Every file of the bundle (plists, token, bands). */
  fileSize: number;
  /** The band files, each counted up to the band size (the bytes that hold the disk). */
  storedSize: number;
}

export class SparseBundleImage extends ReadOnlyBase implements Layer {
  readonly format = 'sparsebundle' as const;
  protected readonly what = 'a sparse bundle';
  readonly size: number;
  readonly path: string;
  private readonly bandSize: number;

  constructor(private readonly parts: SparseBundleParts) {
    super();
    this.path = parts.path;
    this.bandSize = parts.info.bandSize;
    this.size = Math.floor(parts.info.size / SPARSEBUNDLE_BLOCK_SIZE) * SPARSEBUNDLE_BLOCK_SIZE;
  }

  /** Size, Info.plist's modification time, the bands directory's, and the newest band file's. */
  pin(): Promise<ParentPin> {
    return this.parts.identity();
  }

  async details(): Promise<LayerDetails> {
    const info = this.parts.info;
    const usage = await this.parts.usage();
    return {
      virtualSize: this.size,
      // Bands are stored as they are: no codec.
      storedSize: usage.storedSize,
      fileSize: usage.fileSize,
      bandSize: info.bandSize,
      bands: Math.ceil(this.size / info.bandSize),
      bandFiles: this.parts.present.size,
      backingStoreVersion: info.backingStoreVersion,
      plist: info.source,
    };
  }

  /** Calls `each` for every band piece of [offset, offset + length), in order. */
  private pieces(offset: number, length: number, each: (band: number, within: number, at: number, n: number) => void): void {
    const end = offset + length;
    for (let pos = offset; pos < end; ) {
      const band = Math.floor(pos / this.bandSize);
      const within = pos - band * this.bandSize;
      const n = Math.min(end, (band + 1) * this.bandSize) - pos;
      each(band, within, pos, n);
      pos += n;
    }
  }

  async map(offset: number, length: number, maxRuns?: number): Promise<Run[]> {
    const runs: Run[] = [];
    const inside = Math.max(0, Math.min(length, this.size - offset));
    const work: Array<{ band: number; within: number; at: number; n: number }> = [];
    this.pieces(offset, inside, (band, within, at, n) => work.push({ band, within, at, n }));
    for (const w of work) {
      if (maxRuns !== undefined && runs.length >= maxRuns) return runs;
      if (!this.parts.present.has(w.band)) {
        pushRun(runs, w.at, w.n, 'absent');
        continue;
      }
      await this.parts.bands.with(w.band, async (file) => {
        const stored = Math.max(0, Math.min(w.n, (await file.size()) - w.within));
        const extents = stored > 0 ? file.holes?.(w.within, stored) : [];
        if (extents === null || extents === undefined) pushRun(runs, w.at, stored, 'data');
        else for (const e of extents) pushRun(runs, w.at + (e.offset - w.within), e.length, e.hole ? 'zero' : 'data');
        pushRun(runs, w.at + stored, w.n - stored, 'absent');
      });
    }
    pushRun(runs, offset + inside, length - inside, 'absent');
    return runs;
  }

  async read(buf: Buffer, offset: number): Promise<void> {
    const inside = Math.max(0, Math.min(buf.length, this.size - offset));
    if (inside < buf.length) buf.fill(0, inside);
    const work: Promise<void>[] = [];
    this.pieces(offset, inside, (band, within, at, n) => {
      const part = buf.subarray(at - offset, at - offset + n);
      // A file reads as zeros past its end, so a short band needs nothing more.
      if (this.parts.present.has(band)) work.push(this.parts.bands.with(band, (file) => file.read(part, within)));
      else part.fill(0);
    });
    await Promise.all(work);
  }

  close(): Promise<void> {
    return this.parts.bands.close();
  }
}
