/** `stackbd truncate STACK... --size N`: changes the size of the top layer (the stack's size). */
import type { Argv, CommandModule } from 'yargs';
import { DiskImage } from '../stack/disk-image.js';
import { formatSize, parseSize } from './size.js';
import { UsageError } from './usage-error.js';

interface TruncateArgs {
  images: string[];
  size: string;
}

export const truncateCommand: CommandModule<object, TruncateArgs> = {
  command: 'truncate <images..>',
  describe: 'grow or shrink an image (the top layer of a stack); the filesystem inside is not resized',
  builder: (y: Argv) =>
    y
      .positional('images', { type: 'string', array: true, demandOption: true, describe: 'image, or stack bottom first' })
      .option('size', { type: 'string', demandOption: true, describe: 'new virtual size, e.g. 80G' }) as unknown as Argv<TruncateArgs>,
  handler: async (args) => {
    const bytes = parseSize(args.size);
    const image = await DiskImage.open(args.images, { mode: 'readWrite' });
    try {
      if (bytes % image.blockSize !== 0) {
        throw new UsageError(`--size ${args.size} is not a whole number of ${image.blockSize}-byte blocks`);
      }
      await image.truncate(bytes / image.blockSize);
      console.log(`${args.images[args.images.length - 1]}: now ${formatSize(bytes)} (${bytes / image.blockSize} blocks)`);
    } finally {
      await image.close();
    }
  },
};
