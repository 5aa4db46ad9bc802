/** `stackbd convert STACK... -O OUT`: flattens an image or stack into one standalone image. */
import type { Argv, CommandModule } from 'yargs';
import { DiskImage } from '../stack/disk-image.js';
import { convertStack } from '../stack/convert.js';
import { createProgress } from './progress.js';
import { UsageError } from './usage-error.js';

interface ConvertArgs {
  images: string[];
  output: string;
  format: 'raw' | 'asif' | 'dmg';
  'dmg-compression': 'zlib' | 'raw';
  force: boolean;
}

export const convertCommand: CommandModule<object, ConvertArgs> = {
  command: 'convert <images..>',
  describe: 'flatten an image or stack into one new image, keeping holes',
  builder: (y: Argv) =>
    y
      .positional('images', { type: 'string', array: true, demandOption: true, describe: 'image, or stack bottom first' })
      .option('output', { alias: 'O', type: 'string', demandOption: true, describe: 'the new image' })
      .option('format', { choices: ['raw', 'asif', 'dmg'] as const, default: 'raw' as const })
      .option('dmg-compression', { choices: ['zlib', 'raw'] as const, default: 'zlib' as const, describe: 'DMG chunks: zlib (UDZO) or uncompressed (UDRO)' })
      .option('force', { type: 'boolean', default: false, describe: 'replace an existing output file' }) as unknown as Argv<ConvertArgs>,
  handler: async (args) => {
    const image = await DiskImage.open(args.images, { mode: 'readOnly' });
    const progress = createProgress('convert');
    try {
      const dmgCompression = args['dmg-compression'];
      await convertStack(image.stack, args.output, { format: args.format, dmgCompression, overwrite: args.force, onProgress: (d, t) => progress.update(d, t) }).catch(
        (err: unknown) => {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new UsageError(`${args.output} already exists: add --force to replace it`);
          throw err;
        },
      );
    } finally {
      progress.stop();
      await image.close();
    }
  },
};
