/**
 * The built-in demo stack, created under a local folder on first use: a sparse 1 GiB RAW base
 * and an ASIF overlay on it that takes every write (the base never changes).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { createRaw } from '../formats/raw.js';
import { DiskImage } from '../stack/disk-image.js';
import type { ExportSpec } from './export-spec.js';

export const DEMO_EXPORT_NAME = 'demo';
const DEMO_SIZE = 1024 ** 3;

async function exists(file: string): Promise<boolean> {
  return fs.stat(file).then(
    () => true,
    () => false,
  );
}

export async function prepareDemo(dir: string): Promise<ExportSpec> {
  await fs.mkdir(dir, { recursive: true });
  const base = path.join(dir, 'base.raw');
  const overlay = path.join(dir, 'overlay.asif');
  if (!(await exists(base))) await createRaw(base, DEMO_SIZE);
  if (!(await exists(overlay))) {
    const image = await DiskImage.open(base, { mode: 'readOnly' });
    const stacked = await image.appending({ path: overlay, type: 'overlay' });
    await stacked.close();
  }
  return { name: DEMO_EXPORT_NAME, paths: [base, overlay] };
}
