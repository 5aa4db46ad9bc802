/**
 * The DMG fixtures (test/fixtures/dmg/README.md): their decoded sizes and sha256s, and helpers
 * to read a whole layer and to copy a fixture into a temporary folder before changing it.
 */
import { createHash } from 'node:crypto';
import { copyFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { PROJECT_ROOT } from '../../helpers/spawn-server.js';

export const DMG_FIXTURE_DIR = resolve(PROJECT_ROOT, 'test/fixtures/dmg');

const MBR_DISK = '0786ad1fdcba31a3f03ee80eb1d6e8c7ee2f4647a2b4b6f1855c9fe0719784de';

export interface DmgFixture {
  file: string;
  codec: string;
  size: number;
  sha256: string;
  /** dmg2img (Debian 1.6.7) cannot decode LZFSE. */
  dmg2img: boolean;
}

export const DMG_FIXTURES: readonly DmgFixture[] = [
  { file: 'compression-raw.dmg', codec: 'raw', size: 5242880, sha256: MBR_DISK, dmg2img: true },
  { file: 'compression-zlib.dmg', codec: 'zlib', size: 5242880, sha256: MBR_DISK, dmg2img: true },
  { file: 'compression-bz2.dmg', codec: 'bzip2', size: 5242880, sha256: MBR_DISK, dmg2img: true },
  { file: 'compression-adc.dmg', codec: 'adc', size: 5242880, sha256: MBR_DISK, dmg2img: true },
  { file: 'compression-lzfse.dmg', codec: 'lzfse', size: 5242880, sha256: MBR_DISK, dmg2img: false },
  { file: 'gpt.dmg', codec: 'zlib', size: 9379840, sha256: '8a091a4d2f9ad790315d88e3666d81c71a674736e827e0b8410eb257d0a38724', dmg2img: true },
  { file: 'zlib-compressed.dmg', codec: 'zlib', size: 9400320, sha256: '308bcbc833f18ef17c01a3e6798c6de475329710168bd5d3d1cf89f9501b8930', dmg2img: true },
];

export const fixturePath = (f: DmgFixture | string): string => resolve(DMG_FIXTURE_DIR, typeof f === 'string' ? f : f.file);

export function copyFixture(f: DmgFixture | string, to: string): string {
  copyFileSync(fixturePath(f), to);
  return to;
}

export const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** Every byte of a layer (or stack), read in 1 MiB pieces. */
export async function readWhole(layer: { size: number; read(buf: Buffer, offset: number): Promise<unknown> }): Promise<Buffer> {
  const out = Buffer.alloc(layer.size);
  for (let at = 0; at < layer.size; at += 1024 * 1024) await layer.read(out.subarray(at, Math.min(at + 1024 * 1024, layer.size)), at);
  return out;
}
