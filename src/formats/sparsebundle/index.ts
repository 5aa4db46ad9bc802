/**
 * Opening macOS sparse bundles (directories: Info.plist, bands/) as read-only base layers.
 * Refused: an encrypted bundle (its `token` starts with `encrcdsa`; bands are ciphertext) and a
 * backing-store version 2 bundle whose `mapped/` directory holds anything (what it holds is not
 * documented, so reading the bands alone could serve the wrong bytes). Band files are listed
 * once here; names that are not lowercase hex without leading zeros are not bands.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { CorruptedImageError, ImageError, UnsupportedFormatError } from '../../block/errors.js';
import type { ParentPin } from '../layer.js';
import { BandFiles, bandName, DEFAULT_OPEN_BANDS } from './band-files.js';
import { loadBundleInfo } from './info-plist.js';
import { SparseBundleImage, type BundleUsage } from './image.js';

export { SparseBundleImage } from './image.js';

const ENCRYPTED_MAGIC = 'encrcdsa';

export interface SparseBundleOpenOptions {
  /** Band files kept open when idle (default 64). */
  openBands?: number;
}

async function entriesOf(dir: string): Promise<string[] | null> {
  try {
    return await fs.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

async function checkNotEncrypted(bundle: string): Promise<void> {
  const token = path.join(bundle, 'token');
  const handle = await fs.open(token, 'r').catch(() => null);
  if (!handle) return;
  try {
    const head = Buffer.alloc(ENCRYPTED_MAGIC.length);
    const { bytesRead } = await handle.read(head, 0, head.length, 0);
    if (bytesRead === head.length && head.toString('latin1') === ENCRYPTED_MAGIC) {
      throw new UnsupportedFormatError(bundle, 'the sparse bundle is encrypted; attach it on macOS and convert it first');
    }
  } finally {
    await handle.close();
  }
}

/** Band indexes of the files in bands/ (names a band file would have; others are ignored). */
function bandIndexes(names: readonly string[], bandCount: number): Set<number> {
  const present = new Set<number>();
  for (const name of names) {
    if (!/^[0-9a-f]+$/.test(name)) continue;
    const index = parseInt(name, 16);
    if (index < bandCount && bandName(index) === name) present.add(index);
  }
  return present;
}

async function mtimeNs(file: string): Promise<string> {
  return (await fs.stat(file, { bigint: true })).mtimeNs.toString();
}

export async function openSparseBundle(bundle: string, options: SparseBundleOpenOptions = {}): Promise<SparseBundleImage> {
  const st = await fs.stat(bundle).catch(() => null);
  if (!st?.isDirectory()) throw new ImageError(bundle, 'a sparse bundle is a directory');
  const info = await loadBundleInfo(bundle);
  await checkNotEncrypted(bundle);
  if (info.backingStoreVersion === 2 && ((await entriesOf(path.join(bundle, 'mapped'))) ?? []).length > 0) {
    throw new UnsupportedFormatError(bundle, 'the sparse bundle keeps data in mapped/ (backing-store version 2), which is not documented and not read');
  }
  const bandsDir = path.join(bundle, 'bands');
  const names = await entriesOf(bandsDir);
  if (names === null) throw new CorruptedImageError(bundle, 'has no bands directory');
  const bandCount = Math.ceil(info.size / info.bandSize);
  const present = bandIndexes(names, bandCount);
  const plistFile = path.join(bundle, info.source);
  const size = Math.floor(info.size / 512) * 512;
  const identity = async (): Promise<ParentPin> => {
    let newestBand = 0n;
    for (const index of present) {
      const t = (await fs.stat(path.join(bandsDir, bandName(index)), { bigint: true }).catch(() => null))?.mtimeNs ?? 0n;
      if (t > newestBand) newestBand = t;
    }
    return { size, plistMtime: await mtimeNs(plistFile), bandsMtime: await mtimeNs(bandsDir), newestBandMtime: newestBand.toString() };
  };
  const usage = async (): Promise<BundleUsage> => {
    let fileSize = 0;
    for (const name of (await entriesOf(bundle)) ?? []) {
      const s = await fs.stat(path.join(bundle, name)).catch(() => null);
      if (s?.isFile()) fileSize += s.size;
    }
    let storedSize = 0;
    for (const index of present) {
      const band = (await fs.stat(path.join(bandsDir, bandName(index))).catch(() => null))?.size ?? 0;
      fileSize += band;
      storedSize += Math.min(band, info.bandSize);
    }
    return { fileSize, storedSize };
  };
  return new SparseBundleImage({ path: bundle, info, present, bands: new BandFiles(bandsDir, options.openBands ?? DEFAULT_OPEN_BANDS), identity, usage });
}
