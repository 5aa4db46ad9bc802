/**
 * `check` of a read-only base (qcow2, sparse bundle, DMG, ...): open it and walk its whole map,
 * which meets every table entry the format checks as it reads them. The image problem found,
 * as one line, or null. A backing file refused by `--no-backing` is no problem of the image:
 * the check cannot be completed (thrown).
 */
import { ImageError, IncompatibleStackingError } from '../block/errors.js';
import { openImage } from '../formats/open-image.js';

/** Runs asked for at a time, so a huge map is never held whole. */
const RUNS_PER_STEP = 4096;

export async function readOnlyBaseProblem(path: string, noBacking = false): Promise<string | null> {
  try {
    const layer = await openImage(path, { readOnly: true, noBacking });
    try {
      for (let at = 0; at < layer.size; ) {
        const runs = await layer.map(at, layer.size - at, RUNS_PER_STEP);
        const last = runs[runs.length - 1];
        at = last.offset + last.length;
      }
    } finally {
      await layer.close();
    }
    return null;
  } catch (err) {
    if (noBacking && err instanceof IncompatibleStackingError) throw err;
    if (err instanceof ImageError) return err.message;
    throw err;
  }
}
