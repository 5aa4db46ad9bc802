/**
 * `stackbd truncate STACK... --size N`: changes the size of the top layer (the stack's size).
 * Shrinking drops data past the new end, so it needs --shrink; resizing a layer that other
 * layers stack on makes them stale, so it needs --force.
 */
import path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import type { ImageFormat } from '../formats/layer.js';
import { DiskImage } from '../stack/disk-image.js';
import { findChildren } from '../stack/find-children.js';
import { FORMAT_OPTION, imageSpecs, printWarning } from './image-args.js';
import { formatSize, parseSize } from './size.js';
import { CommandFailed, UsageError } from './usage-error.js';

interface TruncateArgs {
  images: string[];
  format?: ImageFormat;
  size: string;
  shrink: boolean;
  force: boolean;
}

export const truncateCommand: CommandModule<object, TruncateArgs> = {
  command: 'truncate <images..>',
  describe: 'grow or shrink an image (the top layer of a stack); the filesystem inside is not resized',
  builder: (y: Argv) =>
    y
      .positional('images', { type: 'string', array: true, demandOption: true, describe: 'image, or stack bottom first' })
      .option('format', FORMAT_OPTION)
      .option('size', { type: 'string', demandOption: true, describe: 'new virtual size, e.g. 80G' })
      .option('shrink', { type: 'boolean', default: false, describe: 'allow a smaller size (what lies past it is dropped)' })
      .option('force', { type: 'boolean', default: false, describe: 'resize even though other layers stack on this one (they go stale)' }) as unknown as Argv<TruncateArgs>,
  handler: async (args) => {
    const bytes = parseSize(args.size, '--size');
    const specs = imageSpecs(args.images, args.format);
    const image = await DiskImage.open(specs, { mode: 'readWrite', onWarning: printWarning });
    try {
      if (bytes === 0 || bytes % image.blockSize !== 0) {
        throw new UsageError(`--size ${args.size} is not a whole number of ${image.blockSize}-byte blocks`);
      }
      const current = image.blockCount * image.blockSize;
      if (bytes < current && !args.shrink) {
        throw new UsageError(
          `--size ${args.size} is smaller than ${formatSize(current)} (${current} bytes): the last ${current - bytes} bytes would be dropped; add --shrink to do it`,
        );
      }
      const top = image.stack.top;
      const children = await findChildren(top, specs.map((s) => path.dirname(s.path)), []);
      if (children.length > 0) {
        const stale = `${children.join(', ')} stack${children.length === 1 ? 's' : ''} on ${top.path} and would go stale`;
        if (!args.force) throw new CommandFailed(`${stale}: add --force to resize it anyway`);
        printWarning(stale);
      }
      await image.truncate(bytes / image.blockSize);
      console.log(`${top.path}: now ${formatSize(bytes)} (${bytes / image.blockSize} blocks)`);
    } finally {
      await image.close();
    }
  },
};
