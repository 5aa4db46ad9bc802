/**
 * UDIF (.dmg) images: read-only bases (open, check) and the writer `convert` uses. The format
 * notes are spec/udif.md; each file here opens with what it does.
 */
import { UnsupportedFormatError } from '../../block/errors.js';
import { decoderFor } from '../../io/codecs/index.js';
import { openFdFile } from '../../io/fd-file.js';
import { ChunkTable } from './chunk-table.js';
import { DmgImage } from './image.js';
import { isCompressed } from './layout.js';
import { loadStructure } from './load.js';

export { DmgImage, DMG_DEFAULT_CACHE_BYTES } from './image.js';
export { checkDmg, type DmgCheckReport } from './check.js';
export { DmgWriter, DEFAULT_PARTITION_NAME, type WriteDmgOptions, type DmgCompression } from './write.js';

export interface OpenDmgOptions {
  /** Bytes of decoded chunks kept in memory (default 8 MiB: DMG_DEFAULT_CACHE_BYTES). */
  cacheBytes?: number;
}

export async function openDmg(path: string, options: OpenDmgOptions = {}): Promise<DmgImage> {
  const file = await openFdFile(path, { readOnly: true });
  try {
    const structure = await loadStructure(file);
    const table = ChunkTable.build(structure, path);
    // Refuse at open, not in the middle of serving, an image whose codec stackbd lacks.
    for (let i = 0; i < table.count; i++) {
      const kind = table.kindOf(i);
      if (isCompressed(kind) && !decoderFor(kind)) throw new UnsupportedFormatError(path, `the image has ${kind} chunks, which stackbd cannot decode yet`);
    }
    return new DmgImage(file, structure, table, options.cacheBytes);
  } catch (err) {
    await file.close();
    throw err;
  }
}
