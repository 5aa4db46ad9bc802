/** `stackbd append STACK... --new PATH --type overlay|cache`: a new layer on top (a snapshot). */
import type { Argv, CommandModule } from 'yargs';
import { DiskImage } from '../stack/disk-image.js';
import { remoteOptionsFrom, withRemoteOptions, type RemoteArgs } from './remote-options.js';
import { parseSize } from './size.js';
import { UsageError } from './usage-error.js';

interface AppendArgs extends RemoteArgs {
  images: string[];
  new: string;
  type: 'overlay' | 'cache';
  size?: string;
  force: boolean;
}

export const appendCommand: CommandModule<object, AppendArgs> = {
  command: 'append <images..>',
  describe: 'create a new ASIF layer on top of an image or stack (an overlay is a snapshot point)',
  builder: (y: Argv) =>
    withRemoteOptions(
      y
        .positional('images', { type: 'string', array: true, demandOption: true, describe: 'image, or stack bottom first' })
        .option('new', { type: 'string', demandOption: true, describe: 'file of the new layer' })
        .option('type', { choices: ['overlay', 'cache'] as const, default: 'overlay' as const })
        .option('size', { type: 'string', describe: 'size of a new overlay (default: the size of the layer below)' })
        .option('force', { type: 'boolean', default: false, describe: 'replace an existing file' }),
    ) as unknown as Argv<AppendArgs>,
  handler: async (args) => {
    const remote = await remoteOptionsFrom(args, (message) => process.stderr.write(`stackbd: warning: ${message}\n`));
    const image = await DiskImage.open(args.images, { mode: 'readOnly', remote });
    let stacked: DiskImage | null = null;
    try {
      let blockCount: number | undefined;
      if (args.size !== undefined) {
        const bytes = parseSize(args.size);
        if (bytes % image.blockSize !== 0) throw new UsageError(`--size ${args.size} is not a whole number of ${image.blockSize}-byte blocks`);
        blockCount = bytes / image.blockSize;
      }
      stacked = await image.appending({ path: args.new, type: args.type, blockCount, overwrite: args.force }).catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new UsageError(`${args.new} already exists: add --force to replace it`);
        throw err;
      });
      console.log(`created ${args.type} layer ${args.new} (parent UUID ${stacked.parentUUID ?? 'none: the layer below is a base without one (RAW or remote)'})`);
      console.log(`stack: ${[...args.images, args.new].join(' ')}`);
    } finally {
      await (stacked ?? image).close();
    }
  },
};
