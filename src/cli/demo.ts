/** The built-in demo: a sparse RAW image under a local folder, created on first use. */
import fs from 'node:fs/promises';
import path from 'node:path';
import { createRaw } from '../formats/raw.js';
import type { ExportSpec } from './export-spec.js';

export const DEMO_EXPORT_NAME = 'demo';
const DEMO_SIZE = 1024 ** 3;

export async function prepareDemo(dir: string): Promise<ExportSpec> {
  await fs.mkdir(dir, { recursive: true });
  const base = path.join(dir, 'base.raw');
  const exists = await fs.stat(base).then(
    () => true,
    () => false,
  );
  if (!exists) await createRaw(base, DEMO_SIZE);
  return { name: DEMO_EXPORT_NAME, paths: [base] };
}
