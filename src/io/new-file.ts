/**
 * Writing a new file whole (create, convert): the file is opened without truncation and
 * locked before an existing one is emptied (fd-file.ts), and when writing it fails, what was
 * made is removed rather than left behind as an empty or half-written image. A file that is in
 * use, or that exists without `overwrite`, is refused before it is touched.
 */
import fs from 'node:fs/promises';
import type { BlockFile } from './block-file.js';
import { openFdFile } from './fd-file.js';

export async function writeNewFile<T>(path: string, overwrite: boolean, write: (file: BlockFile) => Promise<T>): Promise<T> {
  const file = await openFdFile(path, { create: true, overwrite });
  let result: T;
  try {
    result = await write(file);
  } catch (err) {
    await file.close().catch(() => undefined);
    await fs.rm(path, { force: true });
    throw err;
  }
  await file.close();
  return result;
}
