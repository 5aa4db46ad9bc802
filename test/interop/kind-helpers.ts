/**
 * What the export kinds (export-kinds.ts, foreign-kinds.ts) share: the free chunk a stack's
 * overlay zeroes, junk bytes a top layer must hide, writes in client-sized pieces, and the
 * whole-sector check of images made of 512-byte sectors, and reading a stack back flattened.
 */
import fs from 'node:fs/promises';
import { runStackbd } from '../helpers/run-command.js';
import type { DiskImage } from '../../src/stack/disk-image.js';
import type { ExportKind } from './export-kinds.js';
import { CHUNK, SECTOR, type StackModel } from './layer-model.js';
import { MiB, Prng, regionBytes, type DataRegion, type ImageLayout } from './harness.js';

/** The first chunk-aligned 1 MiB of `layout` that no region touches, or null. */
export function freeChunk(layout: ImageLayout): number | null {
  for (let at = 0; at + CHUNK <= layout.size; at += CHUNK) {
    if (!layout.regions.some((r) => r.offset < at + CHUNK && r.offset + r.length > at)) return at;
  }
  return null;
}

/** Bytes that are not the layout's, for places the top layer must hide. */
export function junk(seed: number, length: number): Buffer {
  const bytes = new Prng(seed).bytes(length);
  // Never all zeros (a hidden range of zeros would prove nothing).
  bytes[0] |= 1;
  return bytes;
}

export async function writeAll(write: (buf: Buffer, offset: number) => Promise<unknown>, region: DataRegion): Promise<void> {
  // Written in pieces of at most 8 MiB, as a client's requests would be.
  const data = regionBytes(region);
  for (let done = 0; done < data.length; done += 8 * MiB) {
    await write(data.subarray(done, Math.min(data.length, done + 8 * MiB)), region.offset + done);
  }
}

export function checkAligned(kind: string, layout: ImageLayout): void {
  if (layout.size % SECTOR !== 0) {
    throw new Error(`a ${kind} export is whole 512-byte sectors; ${layout.size} is not: size the layout with alignedSize(kind, size)`);
  }
}

/** The whole virtual disk of a stack (`paths`, bottom first), flattened by the real CLI as a
 * user would (`stackbd convert ... --output-format raw`). */
export async function readBackFlattened(image: { paths: string[] }, size: number): Promise<Buffer> {
  const out = `${image.paths[image.paths.length - 1]}.flat-${process.pid}-${Date.now()}.raw`;
  const r = await runStackbd(['convert', ...image.paths, '-O', out, '--output-format', 'raw']);
  if (r.code !== 0) throw new Error(`stackbd convert ${image.paths.join(' ')} failed (exit ${r.code}):\n${r.stderr}`);
  try {
    const data = await fs.readFile(out);
    if (data.length !== size) throw new Error(`${out} has ${data.length} bytes, expected ${size}`);
    return data;
  } finally {
    await fs.rm(out, { force: true });
  }
}

/** The region with other bytes than the layout's (a base holds these where the overlay fixes it). */
export function otherBytes(region: DataRegion): DataRegion {
  return { ...region, seed: (region.seed ^ 0x0bad_5eed) >>> 0 };
}

/** Writes `upper` through a stack's overlay and zeroes the `free` chunk (a whole-chunk zero
 * that hides the base's junk there), changing `model` alike. */
export async function writeThroughOverlay(image: DiskImage, model: StackModel, upper: readonly DataRegion[], free: number | null): Promise<void> {
  for (const region of upper) {
    await writeAll((buf, at) => image.stack.write(buf, at), region);
    model.write(region.offset, region.length);
  }
  if (free !== null) {
    await image.stack.writeZeroes(free, CHUNK);
    model.writeZeroes(free, CHUNK, false);
  }
}

/** writeThroughOverlay, then closes the image. */
export async function completeThroughOverlay(image: DiskImage, model: StackModel, upper: readonly DataRegion[], free: number | null): Promise<void> {
  try {
    await writeThroughOverlay(image, model, upper, free);
  } finally {
    await image.close();
  }
}

/** How an export whose top image is ASIF answers (a standalone ASIF image, or a stack's ASIF
 * overlay on any base): whole sectors, chunk-wise FAST_ZERO and TRIM, no file holes. */
export const ASIF_TOP: Pick<ExportKind, 'sizeAlignment' | 'budget' | 'fastZero' | 'trim' | 'chunkSize' | 'fileHoles'> = {
  sizeAlignment: SECTOR,
  budget: 'modest',
  fastZero: 'whole-chunks',
  trim: 'whole-chunks',
  chunkSize: CHUNK,
  fileHoles: false,
};
