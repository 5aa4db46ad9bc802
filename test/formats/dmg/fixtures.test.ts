/** Every DMG fixture decodes to the bytes its README names, opened alone and as a stack's base. */
import { describe, expect, it } from 'vitest';
import { openImage } from '../../../src/formats/open-image.js';
import { DiskImage } from '../../../src/stack/disk-image.js';
import { DMG_FIXTURES, fixturePath, readWhole, sha256 } from './dmg-fixtures.js';

describe('DMG fixtures', () => {
  it.each(DMG_FIXTURES)('$file ($codec) decodes through openImage', async (f) => {
    const image = await openImage(fixturePath(f), { readOnly: true });
    try {
      expect([image.format, image.size, image.blockSize, image.readOnly]).toEqual(['dmg', f.size, 512, true]);
      const data = await readWhole(image);
      expect(sha256(data)).toBe(f.sha256);
    } finally {
      await image.close();
    }
  });

  it.each(DMG_FIXTURES)('$file ($codec) decodes as the base of a stack', async (f) => {
    const image = await DiskImage.open(fixturePath(f), { mode: 'readOnly' });
    try {
      expect(image.format).toBe('dmg');
      expect(sha256(await readWhole(image.stack))).toBe(f.sha256);
    } finally {
      await image.close();
    }
  });
});
