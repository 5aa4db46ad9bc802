/**
 * Our reader and writer against 7-Zip and dmg2img: every fixture decodes as they decode it;
 * what we write (UDZO and UDRO, from every fixture and from a disk of odd size) they read back
 * byte for byte, and 7-Zip finds every checksum right; a ULMO (xz) image with comments and
 * zero-fill entries built here decodes and checks the same in 7-Zip.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { openDmg } from '../../../src/formats/dmg/index.js';
import { ChunkType } from '../../../src/formats/dmg/layout.js';
import { convertStack } from '../../../src/stack/convert.js';
import { DiskImage } from '../../../src/stack/disk-image.js';
import { requireTool } from '../../helpers/require-tool.js';
import { useTmpDir } from '../helpers/tmp-dir.js';
import { buildDmg } from './build-dmg.js';
import { DMG_FIXTURES, fixturePath, readWhole, sha256 } from './dmg-fixtures.js';
import { convertWithDmg2img, extractWith7z, testWith7z } from './oracle-tools.js';

const tmp = useTmpDir('dmg-oracles');

async function decode(path: string): Promise<Buffer> {
  const image = await openDmg(path);
  try {
    return await readWhole(image);
  } finally {
    await image.close();
  }
}

async function convertToDmg(source: string, out: string, compression: 'zlib' | 'raw'): Promise<void> {
  const image = await DiskImage.open(source, { mode: 'readOnly' });
  try {
    await convertStack(image.stack, out, { format: 'dmg', dmgCompression: compression, overwrite: true });
  } finally {
    await image.close();
  }
}

describe('fixtures against 7-Zip and dmg2img', () => {
  it.each(DMG_FIXTURES)('$file: 7zz x gives our bytes', async (f) => {
    const ours = await decode(fixturePath(f));
    expect(sha256(await extractWith7z(fixturePath(f), tmp('.')))).toBe(sha256(ours));
  });

  it.each(DMG_FIXTURES.filter((f) => f.dmg2img))('$file: dmg2img gives our bytes', async (f) => {
    const ours = await decode(fixturePath(f));
    expect(sha256(await convertWithDmg2img(fixturePath(f), tmp('.')))).toBe(sha256(ours));
  });
});

describe('what we write, read by 7-Zip, dmg2img and us', () => {
  it.each(DMG_FIXTURES.flatMap((f) => (['zlib', 'raw'] as const).map((c) => [f.file, c] as const)))('%s as %s: round trip', async (file, compression) => {
    const out = tmp(`${file}.${compression}.dmg`);
    await convertToDmg(fixturePath(file), out, compression);
    const want = DMG_FIXTURES.find((f) => f.file === file)!.sha256;
    expect(sha256(await decode(out))).toBe(want);
    expect(sha256(await extractWith7z(out, tmp('.')))).toBe(want);
    expect(sha256(await convertWithDmg2img(out, tmp('.')))).toBe(want);
    await testWith7z(out);
    const image = await openDmg(out);
    expect((await image.details()).udifFormat).toBe(compression === 'zlib' ? 'UDZO' : 'UDRO');
    await image.close();
  });

  it('a disk of 1,000,001 bytes with random, compressible and zero parts comes back padded to whole sectors', async () => {
    const raw = tmp('odd.raw');
    const content = Buffer.concat([randomBytes(300_000), Buffer.alloc(300_000, 0x61), Buffer.alloc(300_000), randomBytes(100_001)]);
    writeFileSync(raw, content);
    const padded = Buffer.concat([content, Buffer.alloc(1_000_448 - content.length)]);
    for (const compression of ['zlib', 'raw'] as const) {
      const out = tmp(`odd.${compression}.dmg`);
      await convertToDmg(raw, out, compression);
      expect((await decode(out)).equals(padded)).toBe(true);
      expect((await extractWith7z(out, tmp('.'))).equals(padded)).toBe(true);
      expect((await convertWithDmg2img(out, tmp('.'))).equals(padded)).toBe(true);
      await testWith7z(out);
    }
  });
});

describe('an image built here with the chunk types the fixtures lack', () => {
  it('ULMO (xz) chunks, comments and zero-fill entries: 7-Zip decodes what we decode and accepts the checksums', async () => {
    requireTool('xz');
    const a = Buffer.concat([randomBytes(100 * 512), Buffer.alloc(156 * 512, 0x33)]);
    const b = randomBytes(16 * 512);
    const xz = (plain: Buffer): Buffer => execFileSync('xz', ['-c'], { input: plain });
    const path = tmp('built-ulmo.dmg');
    writeFileSync(
      path,
      buildDmg([
        {
          name: 'whole disk (Apple_HFS : 0)',
          chunks: [
            { type: ChunkType.COMMENT, sectors: 0 },
            { type: ChunkType.XZ, sectors: 256, stored: xz(a), decoded: a },
            { type: ChunkType.ZERO, sectors: 64 },
            { type: ChunkType.IGNORE, sectors: 32 },
            { type: ChunkType.XZ, sectors: 16, stored: xz(b), decoded: b },
            { type: ChunkType.COMMENT, sectors: 0 },
          ],
        },
      ]),
    );
    const disk = Buffer.concat([a, Buffer.alloc(96 * 512), b]);
    expect((await decode(path)).equals(disk)).toBe(true);
    expect((await extractWith7z(path, tmp('.'))).equals(disk)).toBe(true);
    await testWith7z(path);
  });
});
