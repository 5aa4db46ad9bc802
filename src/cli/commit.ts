/** `stackbd commit STACK...`: merges the top layer into the layer below it. */
import type { Argv, CommandModule } from 'yargs';
import type { ImageFormat } from '../formats/layer.js';
import { commitTop } from '../stack/commit.js';
import { FORMAT_OPTION, imageSpecs, printWarning } from './image-args.js';
import { COPY_OPTIONS, inFlightFrom, type CopyArgs } from './copy-options.js';
import { createProgress, PROGRESS_OPTIONS, progressMode, type ProgressArgs } from './progress.js';
import { formatSize } from './size.js';
import { UsageError } from './usage-error.js';

interface CommitArgs extends ProgressArgs, CopyArgs {
  images: string[];
  format?: ImageFormat;
  force: boolean;
}

export const commitCommand: CommandModule<object, CommitArgs> = {
  command: 'commit <images..>',
  describe: 'merge the top layer of a stack into the layer below it',
  builder: (y: Argv) =>
    y
      .positional('images', { type: 'string', array: true, demandOption: true, describe: 'stack, bottom first (at least two images)' })
      .option('format', FORMAT_OPTION)
      .option('force', { type: 'boolean', default: false, describe: 'commit even though other layers stack on the target (they go stale)' })
      .options(PROGRESS_OPTIONS)
      .options(COPY_OPTIONS) as unknown as Argv<CommitArgs>,
  handler: async (args) => {
    if (args.images.length < 2) throw new UsageError('commit needs a stack: the layers bottom first, at least two');
    const inFlight = inFlightFrom(args);
    const progress = createProgress('commit', progressMode(args));
    try {
      const result = await commitTop(imageSpecs(args.images, args.format), {
        force: args.force,
        inFlight,
        onWarning: printWarning,
        onProgress: (d, t) => progress.update(d, t),
      });
      progress.stop();
      console.log(`committed ${result.top} into ${result.target}: ${formatSize(result.bytesWritten)} written, ${formatSize(result.bytesZeroed)} zeroed`);
      console.log(`${result.top} no longer stacks on ${result.target} (its parent changed); append a new layer to continue`);
    } finally {
      progress.stop();
    }
  },
};
