// @ts-check
/**
 * Makes N ASIF overlays over one base in one process (N runs of `stackbd append` would spend
 * minutes starting Node): each is what `stackbd append BASE --new DIR/oI.asif --type overlay`
 * makes. For scripts/bench/many-exports.sh.
 *
 *   node make-overlays.mjs STACKBD_DIST BASE DIR N
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [dist, base, dir, count] = process.argv.slice(2);
if (!dist || !base || !dir || !count) {
  console.error('usage: node make-overlays.mjs STACKBD_DIST BASE DIR N');
  process.exit(2);
}
/** @type {{ DiskImage: { open(p: string, o?: object): Promise<{ appending(s: object): Promise<{ close(): Promise<void> }> }> } }} */
const lib = await import(pathToFileURL(path.join(dist, 'index.js')).href);
/** Overlays made at once: each waits mostly for its syncs. */
const LANES = 8;
let next = 0;
async function lane() {
  while (next < Number(count)) {
    const i = next++;
    const image = await lib.DiskImage.open(base, { mode: 'readOnly', requireLocks: true });
    const stacked = await image.appending({ path: path.join(dir, `o${i}.asif`), type: 'overlay' });
    await stacked.close();
  }
}
await Promise.all(Array.from({ length: LANES }, lane));
