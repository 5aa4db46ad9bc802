/**
 * Builds sparse bundles from the facts of spec/udif.md §9 (no macOS here): Info.plist and its
 * copy Info.bckup in Apple's XML layout, an empty token, and bands/<lowercase hex> files cut
 * from a flat disk. Bands that are all zeros are left out; a band may be cut short after its
 * last non-zero byte, or written with holes (sparse files).
 */
import fs from 'node:fs/promises';
import path from 'node:path';

export interface BundleSpec {
  bandSize: number;
  /** Virtual size in the plist. */
  size: number;
  version?: number;
  /** How band n is stored: 'full' (band-size bytes), 'short' (up to its last non-zero byte), 'sparse' (holes where zeros). */
  store?: (band: number) => 'full' | 'short' | 'sparse';
}

export function infoPlist(fields: Record<string, string | number>): string {
  const body = Object.entries(fields)
    .map(([k, v]) => `\t<key>${k}</key>\n\t${typeof v === 'number' ? `<integer>${v}</integer>` : `<string>${v}</string>`}`)
    .join('\n');
  return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
${body}
</dict>
</plist>
`;
}

export function standardFields(spec: BundleSpec): Record<string, string | number> {
  return {
    CFBundleInfoDictionaryVersion: '6.0',
    'band-size': spec.bandSize,
    'bundle-backingstore-version': spec.version ?? 1,
    'diskimage-bundle-type': 'com.apple.diskimage.sparsebundle',
    size: spec.size,
  };
}

/** Writes `data` into a new file, leaving 64 KiB-aligned all-zero pieces as holes. */
export async function writeSparse(file: string, data: Buffer): Promise<void> {
  const handle = await fs.open(file, 'w');
  try {
    const piece = 64 * 1024;
    for (let at = 0; at < data.length; at += piece) {
      const part = data.subarray(at, Math.min(data.length, at + piece));
      if (part.some((b) => b !== 0)) await handle.write(part, 0, part.length, at);
    }
    await handle.truncate(data.length);
  } finally {
    await handle.close();
  }
}

/** Writes the bundle for the flat disk `disk` (of spec.size bytes); returns the band indexes written. */
export async function writeBundle(dir: string, disk: Buffer, spec: BundleSpec): Promise<number[]> {
  await fs.mkdir(path.join(dir, 'bands'), { recursive: true });
  const plist = infoPlist(standardFields(spec));
  await fs.writeFile(path.join(dir, 'Info.plist'), plist);
  await fs.writeFile(path.join(dir, 'Info.bckup'), plist);
  await fs.writeFile(path.join(dir, 'token'), '');
  const written: number[] = [];
  for (let band = 0; band * spec.bandSize < spec.size; band++) {
    const data = disk.subarray(band * spec.bandSize, Math.min(spec.size, (band + 1) * spec.bandSize));
    let last = data.length - 1;
    while (last >= 0 && data[last] === 0) last--;
    if (last < 0) continue;
    const file = path.join(dir, 'bands', band.toString(16));
    const how = spec.store?.(band) ?? 'full';
    if (how === 'short') await fs.writeFile(file, data.subarray(0, last + 1));
    else if (how === 'sparse') await writeSparse(file, data);
    else await fs.writeFile(file, data);
    written.push(band);
  }
  return written;
}
