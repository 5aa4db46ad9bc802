/** `stackbd append STACK... --new PATH --type overlay|cache`: a new layer on top (a snapshot). */
import type { Argv, CommandModule } from 'yargs';
import type { ImageFormat } from '../formats/layer.js';
import { DiskImage } from '../stack/disk-image.js';
import { BACKING_OPTION, FORMAT_OPTION, imageSpecs, printWarning } from './image-args.js';
import { remoteOptionsFrom, withRemoteOptions, type RemoteArgs } from './remote-options.js';
import { parseSize } from './size.js';
import { UsageError } from './usage-error.js';

interface AppendArgs extends RemoteArgs {
  images: string[];
  format?: ImageFormat;
  backing: boolean;
  new: string;
  type: 'overlay' | 'cache';
  size?: string;
  'cache-max-size'?: string;
  force: boolean;
}

export const appendCommand: CommandModule<object, AppendArgs> = {
  command: 'append <images..>',
  describe: 'create a new ASIF layer on top of an image or stack (an overlay is a snapshot point)',
  builder: (y: Argv) =>
    withRemoteOptions(y)
      .positional('images', { type: 'string', array: true, demandOption: true, describe: 'image, or stack bottom first' })
      .option('format', FORMAT_OPTION)
        .option('backing', BACKING_OPTION)
      .option('new', { type: 'string', demandOption: true, describe: 'file of the new layer' })
      .option('type', { choices: ['overlay', 'cache'] as const, default: 'overlay' as const })
      .option('size', { type: 'string', describe: 'size of a new overlay (default: the size of the layer below)' })
      .option('cache-max-size', {
        type: 'string',
        describe: 'a cache layer keeps at most this much data, giving up the least recently used first (default: no limit)',
      })
      .option('force', {
        type: 'boolean',
        default: false,
        describe: 'replace an existing file (refused while another program has it open, or when it is in the stack)',
      }) as unknown as Argv<AppendArgs>,
  handler: async (args) => {
    // The layers below must not change while a child records them: they are locked (shared)
    // for the whole command, and one that another program writes is refused.
    const remote = await remoteOptionsFrom(args, printWarning);
    const image = await DiskImage.open(imageSpecs(args.images, args.format, args.backing), { mode: 'readOnly', onWarning: printWarning, requireLocks: true, remote });
    let stacked: DiskImage | null = null;
    try {
      let blockCount: number | undefined;
      if (args.size !== undefined) {
        const bytes = parseSize(args.size, '--size');
        if (bytes % image.blockSize !== 0 || bytes === 0) throw new UsageError(`--size ${args.size} is not a whole number of ${image.blockSize}-byte blocks`);
        blockCount = bytes / image.blockSize;
      }
      const limit = args['cache-max-size'];
      if (limit !== undefined && args.type !== 'cache') throw new UsageError('--cache-max-size is for --type cache');
      const cacheLimit = limit === undefined ? undefined : parseSize(limit, '--cache-max-size');
      stacked = await image.appending({ path: args.new, type: args.type, blockCount, overwrite: args.force, cacheLimit }).catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new UsageError(`${args.new} already exists: add --force to replace it`);
        throw err;
      });
      const below = stacked.layers[stacked.layers.length - 2];
      const recorded = stacked.parentUUID ? `parent UUID ${stacked.parentUUID}` : `identity of ${below.format.toUpperCase()} ${below.path} recorded`;
      console.log(`created ${args.type} layer ${args.new} (${recorded})`);
      console.log(`stack: ${[...args.images, args.new].join(' ')}`);
    } finally {
      await (stacked ?? image).close();
    }
  },
};
