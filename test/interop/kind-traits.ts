/** What the ASIF kinds of the interop tier share: whole sectors, 1 MiB chunks, no file holes. */
import { CHUNK, SECTOR } from './layer-model.js';

export const ASIF_TRAITS = {
  sizeAlignment: SECTOR,
  budget: 'modest',
  fastZero: 'whole-chunks',
  trim: 'whole-chunks',
  chunkSize: CHUNK,
  fileHoles: false,
} as const;
