/** `stackbd convert STACK... -O OUT`: flattens an image or stack into one standalone image. */
import type { Argv, CommandModule } from 'yargs';
import { DiskImage } from '../stack/disk-image.js';
import { convertStack } from '../stack/convert.js';
import { createProgress } from './progress.js';
import { remoteOptionsFrom, withRemoteOptions, type RemoteArgs } from './remote-options.js';
import { UsageError } from './usage-error.js';

interface ConvertArgs extends RemoteArgs {
  images: string[];
  output: string;
  format: 'raw' | 'asif';
  force: boolean;
}

export const convertCommand: CommandModule<object, ConvertArgs> = {
  command: 'convert <images..>',
  describe: 'flatten an image or stack into one new image, keeping holes',
  builder: (y: Argv) =>
    withRemoteOptions(
      y
        .positional('images', { type: 'string', array: true, demandOption: true, describe: 'image, or stack bottom first' })
        .option('output', { alias: 'O', type: 'string', demandOption: true, describe: 'the new image' })
        .option('format', { choices: ['raw', 'asif'] as const, default: 'raw' as const })
        .option('force', { type: 'boolean', default: false, describe: 'replace an existing output file' }),
    ) as unknown as Argv<ConvertArgs>,
  handler: async (args) => {
    const remote = await remoteOptionsFrom(args, (message) => process.stderr.write(`stackbd: warning: ${message}\n`));
    const image = await DiskImage.open(args.images, { mode: 'readOnly', remote });
    const progress = createProgress('convert');
    try {
      await convertStack(image.stack, args.output, { format: args.format, overwrite: args.force, onProgress: (d, t) => progress.update(d, t) }).catch(
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
