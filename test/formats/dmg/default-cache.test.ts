/**
 * The default bound of the decoded-chunk cache (8 MiB, DMG_DEFAULT_CACHE_BYTES): a DMG opened
 * without `cacheBytes` keeps the last 8 chunks of 1 MiB and decodes the ninth-last again.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DmgWriter, openDmg } from '../../../src/formats/dmg/index.js';
import { makeTempDir, removeDir } from '../../helpers/tmp.js';

const MiB = 1024 * 1024;
const CHUNKS = 12;

describe('the DMG chunk cache by default', () => {
  let dir: string;
  let file: string;

  beforeAll(async () => {
    dir = await makeTempDir('stackbd-dmg-cache-');
    file = path.join(dir, 'disk.dmg');
    // 12 zlib chunks of 1 MiB (compressible, so none is stored raw).
    const writer = await DmgWriter.create(file, { size: CHUNKS * MiB });
    for (let i = 0; i < CHUNKS; i++) await writer.write(Buffer.alloc(MiB, `chunk ${i} `), i * MiB);
    await writer.finish();
  });
  afterAll(() => removeDir(dir));

  it('keeps 8 chunks: after 12 chunks read in turn, the last 8 are cached and the 4 before them are not', async () => {
    const image = await openDmg(file);
    try {
      for (let i = 0; i < CHUNKS; i++) await image.read(Buffer.alloc(4096), i * MiB);
      expect(image.decodes).toBe(CHUNKS);
      // The 8 most recent: no decode.
      for (let i = CHUNKS - 1; i >= CHUNKS - 8; i--) await image.read(Buffer.alloc(4096), i * MiB + 8192);
      expect(image.decodes).toBe(CHUNKS);
      // The one read before them was given up.
      const again = Buffer.alloc(4096);
      await image.read(again, (CHUNKS - 9) * MiB);
      expect(image.decodes).toBe(CHUNKS + 1);
      expect(again.subarray(0, 8).toString()).toBe(`chunk ${CHUNKS - 9} `);
    } finally {
      await image.close();
    }
  });
});
