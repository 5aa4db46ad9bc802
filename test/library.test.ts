import fs from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as stackbd from '../src/index.js';
import { makeTempDir, removeDir } from './helpers/tmp.js';

describe('the library entry point', () => {
  it('builds a stack the way the README shows', async () => {
    const dir = await makeTempDir();
    try {
      await fs.writeFile(path.join(dir, 'base.raw'), Buffer.alloc(1 << 20, 1));
      const base = await stackbd.DiskImage.open(path.join(dir, 'base.raw'));
      let vm = await base.appending({ path: path.join(dir, 'cache.asif'), type: 'cache' });
      vm = await vm.appending({ path: path.join(dir, 'vm1.asif'), type: 'overlay' });
      expect([vm.blockCount, vm.blockSize, vm.layerType, vm.parentUUID === vm.layers[1].layerUUID]).toEqual([2048, 512, 'overlay', true]);
      await vm.close();
      expect(typeof stackbd.NbdServer).toBe('function');
      expect(typeof stackbd.NbdClient.connect).toBe('function');
      expect(new stackbd.CorruptedImageError('f', 'bad')).toBeInstanceOf(stackbd.StackbdError);
    } finally {
      await removeDir(dir);
    }
  });
});
