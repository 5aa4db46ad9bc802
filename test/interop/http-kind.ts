/**
 * The `http-stack` export kind of the interop tier: the `stack` kind's base (the layout, with
 * other bytes where the overlay holds every other region, and junk in a free chunk that the
 * overlay zeroes) is served by nginx over http://; the export is that URL, an ASIF cache layer
 * and an ASIF overlay, made with `stackbd append` as a user would.
 *
 * A base read over http has no map (everything is data) and a cache fills as clients read, so
 * the allocation a client sees would change with every read. To make it exact, the cache is
 * filled whole when the image is made, after the overlay was written: the cache then answers
 * everywhere the overlay does not, and a read never falls through to the origin again. Whole
 * chunks that are holes of the served file and that the overlay leaves alone are stored as
 * zero chunks directly (an 8 GiB export is mostly holes: reading them over http would take
 * long); the rest is warmed from nginx (src/stack/warm.ts). Its model comes from the file nginx
 * serves: a whole chunk the overlay does not touch is a zero chunk of the cache where that
 * file is all zeros there and a data chunk otherwise; in a chunk the overlay touches, the
 * cache holds data (the warm stores the pieces around the overlay's sectors, zeros included,
 * as written sectors).
 *
 * One nginx per directory, started by the first image made in it and stopped by
 * `releaseExports(dir)` (each suite's afterAll), by its pid.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { DiskImage } from '../../src/stack/disk-image.js';
import { warmStack } from '../../src/stack/warm.js';
import { runStackbd } from '../helpers/run-command.js';
import { startNginx, type Nginx } from '../remote/helpers/nginx.js';
import { stackKind, writeStackBase, type ExportKind } from './export-kinds.js';
import { ASIF_TOP, checkAligned, writeThroughOverlay } from './kind-helpers.js';
import { CHUNK, LayerModel, SECTOR, StackModel } from './layer-model.js';

/** The origin serving each directory's bases. */
const origins = new Map<string, Promise<Nginx>>();

function originFor(dir: string): Promise<Nginx> {
  let origin = origins.get(dir);
  if (!origin) {
    origin = (async () => {
      const own = path.join(dir, 'nginx-origin');
      await fs.mkdir(own, { recursive: true });
      return startNginx({ dir: own, root: dir });
    })();
    origins.set(dir, origin);
  }
  return origin;
}

/** Stops the origin started for `dir`, if any (call before removing the directory). */
export async function releaseExports(dir: string): Promise<void> {
  const origin = origins.get(dir);
  if (!origin) return;
  origins.delete(dir);
  await (await origin).stop();
}

async function stackbd(args: string[]): Promise<void> {
  const r = await runStackbd(args);
  if (r.code !== 0) throw new Error(`stackbd ${args.join(' ')} failed (exit ${r.code}):\n${r.stderr}`);
}

/** For each chunk of `file`: true when all its bytes are zeros (only chunks `touched` by data are read). */
async function zeroChunks(file: string, size: number, touched: (c: number) => boolean): Promise<boolean[]> {
  const out: boolean[] = [];
  const handle = await fs.open(file, 'r');
  const buf = Buffer.alloc(CHUNK);
  const zeros = Buffer.alloc(CHUNK);
  try {
    for (let at = 0, c = 0; at < size; at += CHUNK, c++) {
      if (!touched(c)) {
        out.push(true);
        continue;
      }
      const n = Math.min(CHUNK, size - at);
      const { bytesRead } = await handle.read(buf, 0, n, at);
      if (bytesRead !== n) throw new Error(`${file}: short read at ${at}`);
      out.push(buf.subarray(0, n).equals(zeros.subarray(0, n)));
    }
  } finally {
    await handle.close();
  }
  return out;
}

export const httpStackKind: ExportKind = {
  name: 'http-stack',
  async prepare(_reference, layout, dir, baseName) {
    checkAligned('http-stack', layout);
    const origin = await originFor(dir);
    const served = path.join(dir, `${baseName}.base.raw`);
    const url = origin.url(`${baseName}.base.raw`);
    const cache = path.join(dir, `${baseName}.cache.asif`);
    const overlay = path.join(dir, `${baseName}.overlay.asif`);
    const { upper, free, baseData } = await writeStackBase(served, layout);
    await stackbd(['append', url, '--new', cache, '--type', 'cache']);
    await stackbd(['append', url, cache, '--new', overlay]);
    const size = layout.size;
    // The http base: everything data (it has no map); the cache and the overlay start empty.
    const model = new StackModel([LayerModel.raw(size, SECTOR, [{ offset: 0, length: size }]), LayerModel.layer(size), LayerModel.layer(size)], 1);
    const [, cacheModel, overlayModel] = model.layers;
    const chunks = Math.ceil(size / CHUNK);
    const touched = (c: number): boolean => baseData.some((r) => r.length > 0 && r.offset < (c + 1) * CHUNK && r.offset + r.length > c * CHUNK);
    const image = await DiskImage.open([url, cache, overlay], { mode: 'readWrite' });
    try {
      await writeThroughOverlay(image, model, upper, free);
      // Whole chunks that are holes of the served file and that the overlay leaves alone are
      // stored as zero chunks directly (what the warm would store, without reading gigabytes
      // of zeros over http); the warm reads the rest from nginx.
      const untouched = (c: number): boolean => !touched(c) && 'uniform' in overlayModel.sectorsOf(c) && (c + 1) * CHUNK <= size;
      for (let c = 0; c < chunks; ) {
        if (!untouched(c)) {
          c++;
          continue;
        }
        let end = c;
        while (end < chunks && untouched(end)) end++;
        await image.stack.layers[1].zero(c * CHUNK, (end - c) * CHUNK);
        c = end;
      }
      const warmed = await warmStack(image.stack, null);
      if (warmed.stopped !== 'done') throw new Error(`the warm of ${cache} stopped: ${warmed.stopped}`);
    } finally {
      await image.close();
    }
    const zero = await zeroChunks(served, size, touched);
    for (let c = 0; c < chunks; c++) {
      const at = c * CHUNK;
      const length = Math.min(CHUNK, size - at);
      cacheModel.write(at, length);
      // A whole chunk the overlay does not touch, all zeros at the origin: a zero chunk.
      if (zero[c] && 'uniform' in overlayModel.sectorsOf(c)) cacheModel.zero(at, length, false);
    }
    return { paths: [url, cache, overlay], extents: model.extents(), origin: served, cache };
  },
  ...ASIF_TOP,
  // qemu-nbd cannot stack a qcow2 overlay on our URL-plus-cache base: it serves a RAW copy.
  qemuEquivalent: 'raw-copy',
  readBack: (image, size) => stackKind.readBack(image, size),
};
