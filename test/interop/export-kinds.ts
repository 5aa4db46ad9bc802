/**
 * The kinds of export the interop tier runs against. Every interop suite is a
 * `describe.each(EXPORT_KINDS)`, so a new image format joins the whole tier by adding one entry
 * here: it turns a reference RAW file (whose content the tests know) into the files of an
 * export, says what its allocation looks like to base:allocation and qemu:allocation-depth,
 * and how it answers FAST_ZERO.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { writeRawImage, type ImageLayout } from './harness.js';

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
  /** The files to export, bottom first (`--export NAME=p1,p2,...`). */
  paths: string[];
  /** The extents of the untouched image, merged, covering the whole disk. */
  extents: ExpectedExtent[];
}

export interface ExportKind {
  /** Shown in test names. */
  name: string;
  /** Builds the image from `reference`, a RAW file holding exactly `layout`, inside `dir`. */
  prepare(reference: string, layout: ImageLayout, dir: string, baseName: string): Promise<PreparedImage>;
  /** What WRITE_ZEROES with FAST_ZERO does: 'enotsup' = always refused with ENOTSUP and the
   * range left unchanged; 'zeroes' = always zeroes the range. */
  fastZero: 'enotsup' | 'zeroes';
  /** Whether TRIM keeps the bytes (RAW: node:fs cannot punch holes) or may zero them. */
  trimKeepsData: boolean;
  /** The whole virtual disk, read from the image files themselves (not through a server),
   * after the server that wrote them has stopped. */
  readBack(image: PreparedImage, size: number): Promise<Buffer>;
}

/** RAW: the reference content written again as a sparse file (a plain copy would fill the
 * holes); every byte is data of the only layer. */
export const rawKind: ExportKind = {
  name: 'raw',
  async prepare(_reference, layout, dir, baseName) {
    const file = path.join(dir, `${baseName}.raw`);
    await writeRawImage(file, layout);
    return { paths: [file], extents: [{ offset: 0, length: layout.size, allocation: 0, depth: 1 }] };
  },
  fastZero: 'enotsup',
  trimKeepsData: true,
  async readBack(image, size) {
    const data = await fs.readFile(image.paths[0]);
    if (data.length !== size) throw new Error(`${image.paths[0]} has ${data.length} bytes, expected ${size}`);
    return data;
  },
};

export const EXPORT_KINDS: readonly ExportKind[] = [rawKind];

export interface PreparedExport extends PreparedImage {
  /** The reference RAW file the image was built from (`BASE.reference.raw`). */
  reference: string;
}

/** Writes `layout` as the reference RAW file `DIR/BASE.reference.raw` and builds the kind's
 * image from it (files named after `baseName`). */
export async function prepareExport(kind: ExportKind, dir: string, baseName: string, layout: ImageLayout): Promise<PreparedExport> {
  const reference = path.join(dir, `${baseName}.reference.raw`);
  await writeRawImage(reference, layout);
  return { ...(await kind.prepare(reference, layout, dir, baseName)), reference };
}
