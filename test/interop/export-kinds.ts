/**
 * The kinds of export the interop tier runs against. Every interop suite is a
 * `describe.each(EXPORT_KINDS)`, so a new image format joins the whole tier by adding one entry
 * here: it turns a reference RAW file (whose content the tests know) into the files of an
 * export, says what its allocation looks like to base:allocation and qemu:allocation-depth,
 * how it answers FAST_ZERO and TRIM, and what qemu-nbd serves as the same disk.
 *
 * - `raw`: the reference content as a sparse RAW file: the file system blocks the layout's
 *   regions touch are data, the rest are holes, which RAW reports as zeros of its only layer
 *   (base:allocation 3, depth 1). TRIM and WRITE_ZEROES punch holes (FAST_ZERO too).
 * - `asif`: a standalone ASIF image written through the library: the layout's sectors are
 *   data, one chunk that was written and then zeroed is a zero chunk (status 10), the rest was
 *   never written (absent: depth 0, reads as zeros).
 * - `stack`: a RAW base and an ASIF overlay appended on it. The base holds the layout, except
 *   that every other region holds other bytes there and one free chunk holds junk; the overlay,
 *   written through the library, holds the right bytes of those regions and zeroes the junk
 *   chunk (a whole-chunk zero: status 10), so the export reads exactly as the layout and both
 *   depths (1 = overlay, 2 = base) appear; where neither holds data, the base's holes show
 *   (depth 2, hole+zero). A server that let the base show through where the overlay holds a
 *   range would read wrong bytes.
 * - `qcow2-base`, `dmg-base`, `sparsebundle-base`: the same shape on a foreign read-only base
 *   (a qcow2 image with zero clusters and a compressed backing file; a UDZO DMG; a sparse
 *   bundle with missing, short and sparse bands): see foreign-kinds.ts.
 * - `http-stack` (http-kind.ts): the `stack` kind's base served by nginx over http://, with an
 *   ASIF cache layer (filled whole when made, so its allocation is exact) and the overlay.
 *
 * ASIF images are whole 512-byte sectors: a suite that wants an odd size asks `alignedSize`.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { createAsif } from '../../src/formats/asif/index.js';
import { openImage } from '../../src/formats/open-image.js';
import { DiskImage } from '../../src/stack/disk-image.js';
import { CHUNK, LayerModel, SECTOR, StackModel, type ByteRange } from './layer-model.js';
import { fileSystemBlockSize, writeRawImage, type DataRegion, type ImageLayout } from './harness.js';
import { dmgBaseKind, qcow2BaseKind, sparseBundleBaseKind } from './foreign-kinds.js';
import { httpStackKind } from './http-kind.js';
import { ASIF_TOP, checkAligned, completeThroughOverlay, freeChunk, junk, otherBytes, readBackFlattened, writeAll } from './kind-helpers.js';

/** One extent as NBD metadata contexts report it. */
export interface ExpectedExtent {
  offset: number;
  length: number;
  /** base:allocation flags: 0 data, 1 HOLE, 2 ZERO, 3 HOLE|ZERO. */
  allocation: number;
  /** qemu:allocation-depth: 0 unallocated, 1 the top layer, 2 the one below, ... */
  depth: number;
}

export interface PreparedImage {
  /** The files (or a URL for the base) to export, bottom first (`--export NAME=p1,p2,...`). */
  paths: string[];
  /** When the base is a URL: the local file its origin serves. */
  origin?: string;
  /** A cache layer: the server opens it for writing even when it serves read-only (its fills). */
  cache?: string;
  /** The extents of the untouched image, merged, covering the whole disk. */
  extents: ExpectedExtent[];
  /** Files the export reads besides `paths` and never writes (a qcow2 base's backing file). */
  backingFiles?: string[];
}

export interface ExportKind {
  /** Shown in test names. */
  name: string;
  /** The size of its images must be a multiple of this many bytes (ASIF: 512-byte sectors). */
  sizeAlignment: number;
  /** 'full' sizes and request counts, or 'modest' ones (a fraction, the same shapes) so that the
   * whole tier stays within a few minutes: the server code the suites reach is shared by the
   * kinds below the format, and RAW runs everything at full size. */
  budget: 'full' | 'modest';
  /** Builds the image from `reference`, a RAW file holding exactly `layout`, inside `dir`. */
  prepare(reference: string, layout: ImageLayout, dir: string, baseName: string): Promise<PreparedImage>;
  /** What WRITE_ZEROES with FAST_ZERO does: 'zeroes' = always zeroes the range (RAW: punches a
   * hole, as without the flag); 'whole-chunks' = zeroes a range of whole chunks (`chunkSize`) at
   * once, and is refused with ENOTSUP, changing nothing, when a partly covered chunk of the
   * range holds data (zeroing it would need data writes). */
  fastZero: 'zeroes' | 'whole-chunks';
  /** What TRIM does: 'zeroes' = exactly the trimmed range reads as zeros afterwards (RAW: the
   * file system blocks inside it become holes, partly covered blocks are zeroed in place);
   * 'whole-chunks' = each whole chunk inside the range that the top image holds is released and
   * reads as zeros, every other byte (partly covered chunks, chunks the top does not hold) keeps
   * what it read before. */
  trim: 'zeroes' | 'whole-chunks';
  /** The allocation unit for fastZero and trim ('whole-chunks'); null for RAW. */
  chunkSize: number | null;
  /** True when the export's allocation is its file's holes (RAW): base:allocation then changes
   * block by block of the file system (fileSystemBlockSize), as the file's blocks do. */
  fileHoles: boolean;
  /** What qemu-nbd serves as the same disk in the differential test: a RAW copy of the content,
   * or a qcow2 overlay (holding the upper layers' content) on a copy of the stack's base. */
  qemuEquivalent: 'raw-copy' | 'qcow2-overlay';
  /** The whole virtual disk, read from the image files themselves (not through a server),
   * after the server that wrote them has stopped. */
  readBack(image: PreparedImage, size: number): Promise<Buffer>;
}

/** What a TRIM of [offset, offset + length) does to the bytes of `kind`: the ranges that read as
 * zeros afterwards, and the ranges that may or may not (undefined until written again: the whole
 * chunks inside the range, released only if the top image holds them). Every other byte keeps
 * what it read before. */
export function trimEffect(kind: ExportKind, offset: number, length: number): { zeroed: Array<[number, number]>; undefined: Array<[number, number]> } {
  if (length <= 0) return { zeroed: [], undefined: [] };
  if (kind.trim === 'zeroes') return { zeroed: [[offset, offset + length]], undefined: [] };
  const unit = kind.chunkSize!;
  const chunks: Array<[number, number]> = [];
  for (let c = Math.ceil(offset / unit) * unit; c + unit <= offset + length; c += unit) chunks.push([c, c + unit]);
  return { zeroed: [], undefined: chunks };
}

/** `size` rounded up to what `kind` can hold, for suites that would like an odd size. */
export function alignedSize(kind: ExportKind, size: number): number {
  return Math.ceil(size / kind.sizeAlignment) * kind.sizeAlignment;
}

/** RAW: the reference content written again as a sparse file (a plain copy would fill the
 * holes): the blocks the regions touch are data, the holes zeros of the only layer. */
export const rawKind: ExportKind = {
  name: 'raw',
  async prepare(_reference, layout, dir, baseName) {
    const file = path.join(dir, `${baseName}.raw`);
    await writeRawImage(file, layout);
    const model = LayerModel.raw(layout.size, await fileSystemBlockSize(dir), layout.regions);
    return { paths: [file], extents: new StackModel([model]).extents() };
  },
  sizeAlignment: 1,
  budget: 'full',
  fastZero: 'zeroes',
  trim: 'zeroes',
  chunkSize: null,
  fileHoles: true,
  qemuEquivalent: 'raw-copy',
  async readBack(image, size) {
    const data = await fs.readFile(image.paths[0]);
    if (data.length !== size) throw new Error(`${image.paths[0]} has ${data.length} bytes, expected ${size}`);
    return data;
  },
};

/** ASIF: a standalone image holding the layout (written through the library); one free chunk
 * is written and then zeroed whole, so a zero chunk (status 10) is part of every image. */
export const asifKind: ExportKind = {
  name: 'asif',
  async prepare(_reference, layout, dir, baseName) {
    checkAligned('asif', layout);
    const file = path.join(dir, `${baseName}.asif`);
    await createAsif(file, { blockCount: layout.size / SECTOR });
    const model = LayerModel.standalone(layout.size);
    // Through a stack of the one image, which pads the layout's unaligned regions to sectors.
    const image = await DiskImage.open(file, { mode: 'readWrite' });
    try {
      for (const region of layout.regions) {
        await writeAll((buf, at) => image.stack.write(buf, at), region);
        model.write(region.offset, region.length);
      }
      const free = freeChunk(layout);
      if (free !== null) {
        await image.stack.write(junk(layout.regions.length, CHUNK), free);
        model.write(free, CHUNK);
        await image.stack.writeZeroes(free, CHUNK);
        model.zero(free, CHUNK, false);
      }
    } finally {
      await image.close();
    }
    return { paths: [file], extents: new StackModel([model]).extents() };
  },
  ...ASIF_TOP,
  qemuEquivalent: 'raw-copy',
  async readBack(image, size) {
    const layer = await openImage(image.paths[0], { readOnly: true });
    try {
      if (layer.size !== size) throw new Error(`${image.paths[0]} is ${layer.size} bytes, expected ${size}`);
      const buf = Buffer.alloc(size);
      await layer.read(buf, 0);
      return buf;
    } finally {
      await layer.close();
    }
  },
};

/** A RAW base and an ASIF overlay: see the header of this file. */
export const stackKind: ExportKind = {
  name: 'stack',
  async prepare(_reference, layout, dir, baseName) {
    checkAligned('stack', layout);
    const base = path.join(dir, `${baseName}.base.raw`);
    const overlay = path.join(dir, `${baseName}.overlay.asif`);
    const { upper, free, baseData } = await writeStackBase(base, layout);
    // An overlay above a RAW base has no parent UUID (what `stackbd append` creates).
    await createAsif(overlay, { blockCount: layout.size / SECTOR, layerType: 'overlay', parentUUID: null });
    const model = new StackModel([LayerModel.raw(layout.size, await fileSystemBlockSize(dir), baseData), LayerModel.layer(layout.size)]);
    await completeThroughOverlay(await DiskImage.open([base, overlay], { mode: 'readWrite' }), model, upper, free);
    return { paths: [base, overlay], extents: model.extents() };
  },
  ...ASIF_TOP,
  qemuEquivalent: 'qcow2-overlay',
  readBack: readBackFlattened,
};

/**
 * The base of a `stack` kind, written to `file`: the layout, with other bytes where the overlay
 * will hold the regions (every other one), and junk in a free chunk, which the overlay zeroes.
 * Returns what the overlay must hold and the base's data ranges.
 */
export async function writeStackBase(file: string, layout: ImageLayout): Promise<{ upper: DataRegion[]; free: number | null; baseData: ByteRange[] }> {
  const upper = layout.regions.filter((_, i) => i % 2 === 1);
  const free = freeChunk(layout);
  const baseRegions = layout.regions.map((r, i) => (i % 2 === 1 ? otherBytes(r) : r));
  await writeRawImage(file, { size: layout.size, regions: baseRegions });
  if (free !== null) {
    const handle = await fs.open(file, 'r+');
    await handle.write(junk(layout.regions.length + 1, CHUNK), 0, CHUNK, free);
    await handle.close();
  }
  return { upper, free, baseData: free === null ? layout.regions : [...layout.regions, { offset: free, length: CHUNK }] };
}

export const EXPORT_KINDS: readonly ExportKind[] = [rawKind, asifKind, stackKind, qcow2BaseKind, dmgBaseKind, sparseBundleBaseKind, httpStackKind];

export interface PreparedExport extends PreparedImage {
  /** The reference RAW file the image was built from (`BASE.reference.raw`). */
  reference: string;
}

/** Writes `layout` as the reference RAW file `DIR/BASE.reference.raw` and builds the kind's
 * image from it (files named after `baseName`). */
export async function prepareExport(kind: ExportKind, dir: string, baseName: string, layout: ImageLayout): Promise<PreparedExport> {
  if (layout.size % kind.sizeAlignment !== 0) {
    throw new Error(`a ${kind.name} export of ${layout.size} bytes: sizes must be multiples of ${kind.sizeAlignment} (use alignedSize(kind, size))`);
  }
  const reference = path.join(dir, `${baseName}.reference.raw`);
  await writeRawImage(reference, layout);
  return { ...(await kind.prepare(reference, layout, dir, baseName)), reference };
}

/** Every local file an image reads: its paths (a sparse bundle's directory: every file inside;
 * a URL base: the file its origin serves), then its backing files. */
export async function filesOf(image: PreparedImage): Promise<string[]> {
  const out: string[] = [];
  const walk = async (p: string): Promise<void> => {
    if (!(await fs.stat(p)).isDirectory()) {
      out.push(p);
      return;
    }
    for (const entry of (await fs.readdir(p)).sort()) await walk(path.join(p, entry));
  };
  for (const p of [...image.paths, ...(image.backingFiles ?? [])]) await walk(/^https?:\/\//.test(p) ? image.origin! : p);
  return out;
}
