/**
 * Which layers stack on a given image, found by looking: the ASIF files in the folders given
 * (the image's own and those of the stack named on the command line) whose parent record
 * names it, by layer UUID for an ASIF parent or by pin for any other. A layer records its
 * parent, never its children, so this is how `commit` and `truncate` can say which files a
 * change would make stale. Children kept in other folders cannot be seen.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { openAsif } from '../formats/asif/index.js';
import type { Layer } from '../formats/layer.js';
import { isSameFile } from '../io/same-file.js';
import { pinMismatch } from './chain.js';

const ASIF_MAGIC = Buffer.from('shdw', 'latin1');

async function startsWithAsifMagic(file: string): Promise<boolean> {
  const handle = await fs.open(file, 'r').catch(() => null);
  if (!handle) return false;
  try {
    const head = Buffer.alloc(4);
    const { bytesRead } = await handle.read(head, 0, 4, 0);
    return bytesRead === 4 && head.equals(ASIF_MAGIC);
  } finally {
    await handle.close();
  }
}

/** The files in `folders` that stack directly on `parent`, leaving out `exclude` (paths). */
export async function findChildren(parent: Layer, folders: readonly string[], exclude: readonly string[]): Promise<string[]> {
  const pin = parent.format === 'asif' ? null : await parent.pin();
  const found: string[] = [];
  for (const folder of [...new Set(folders.map((f) => path.resolve(f)))]) {
    const names = await fs.readdir(folder).catch(() => [] as string[]);
    for (const name of names.sort()) {
      const file = path.join(folder, name);
      const st = await fs.stat(file).catch(() => null);
      if (!st?.isFile() || !(await startsWithAsifMagic(file))) continue;
      if (await isSameFile(file, parent.path)) continue;
      let excluded = false;
      for (const e of exclude) if (await isSameFile(file, e)) excluded = true;
      if (excluded) continue;
      const layer = await openAsif(file, { readOnly: true }).catch(() => null);
      if (!layer) continue;
      try {
        const child =
          parent.format === 'asif'
            ? layer.parentUUID === parent.layerUUID
            : layer.parentUUID === null && layer.parentPin !== null && pin !== null && pinMismatch(layer.parentPin, pin) === null;
        if (child) found.push(file);
      } finally {
        await layer.close();
      }
    }
  }
  return found;
}
