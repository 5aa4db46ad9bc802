/** `stackbd create PATH --size N`: a new empty ASIF or RAW image. */
import type { Argv, CommandModule } from 'yargs';
import { createImage } from '../formats/open-image.js';
import { parseSize, formatSize } from './size.js';
import { UsageError } from './usage-error.js';

interface CreateArgs {
  path: string;
  size: string;
  format: 'asif' | 'raw';
  'block-size': 512 | 4096;
  force: boolean;
}

export const createCommand: CommandModule<object, CreateArgs> = {
  command: 'create <path>',
  describe: 'create an empty disk image (ASIF by default, or RAW)',
  builder: (y: Argv) =>
    y
      .positional('path', { type: 'string', demandOption: true, describe: 'file to create' })
      .option('size', { type: 'string', demandOption: true, describe: 'virtual size: 40G, 512M, 1T (binary) or 100GB (decimal)' })
      .option('format', { alias: 'f', choices: ['asif', 'raw'] as const, default: 'asif' as const })
      .option('block-size', { choices: [512, 4096] as const, default: 512 as const, describe: 'sector size in bytes' })
      .option('force', {
        type: 'boolean',
        default: false,
        describe: 'replace an existing file (refused while another program has it open)',
      }) as unknown as Argv<CreateArgs>,
  handler: async (args) => {
    const bytes = parseSize(args.size, '--size');
    const blockSize = Number(args['block-size']) as 512 | 4096;
    if (bytes < blockSize) throw new UsageError(`--size ${args.size} is ${bytes} bytes: an image holds at least one ${blockSize}-byte block`);
    if (bytes % blockSize !== 0) {
      throw new UsageError(`--size ${args.size} (${bytes} bytes) is not a whole number of ${blockSize}-byte blocks`);
    }
    try {
      await createImage(args.path, { format: args.format, blockCount: bytes / blockSize, blockSize, overwrite: args.force });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw new UsageError(`${args.path} already exists: add --force to replace it`);
      if (code === 'EISDIR') throw new UsageError(`${args.path} is a directory`);
      throw err;
    }
    console.log(`created ${args.path}: ${args.format.toUpperCase()}, ${formatSize(bytes)} (${bytes / blockSize} blocks of ${blockSize} bytes)`);
  },
};
