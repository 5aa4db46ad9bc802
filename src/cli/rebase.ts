/**
 * `stackbd rebase NEWSTACK... LAYER (--from OLDSTACK... | --unsafe)`: re-points a layer at a new
 * parent. With --from (safe) the layer keeps reading exactly as before: where the old and new
 * parents differ under it, the old bytes are copied into it. With --unsafe only its record of
 * the parent changes, for a parent the user knows to hold the same content (a moved or copied
 * base), as `qemu-img rebase -u`.
 */
import type { Argv, CommandModule } from 'yargs';
import type { ImageFormat } from '../formats/layer.js';
import { rebaseLayer } from '../stack/rebase.js';
import { FORMAT_OPTION, imageSpecs, printWarning } from './image-args.js';
import { createProgress, PROGRESS_OPTIONS, progressMode, type ProgressArgs } from './progress.js';
import { formatSize } from './size.js';
import { UsageError } from './usage-error.js';

interface RebaseArgs extends ProgressArgs {
  images: string[];
  format?: ImageFormat;
  from?: string[];
  unsafe: boolean;
}

export const rebaseCommand: CommandModule<object, RebaseArgs> = {
  command: 'rebase <images..>',
  describe: 'make the last image a layer of the stack before it: copy what differs from its old stack (--from), or only re-point it (--unsafe)',
  builder: (y: Argv) =>
    y
      .positional('images', { type: 'string', array: true, demandOption: true, describe: 'the new stack bottom first, then the layer to re-point' })
      .option('format', FORMAT_OPTION)
      .option('from', { type: 'string', array: true, describe: 'the stack the layer stands on now, bottom first (safe rebase)' })
      .option('unsafe', { type: 'boolean', default: false, describe: 'change only the record of the parent: you vouch the new parent reads like the old one' })
      .options(PROGRESS_OPTIONS) as unknown as Argv<RebaseArgs>,
  handler: async (args) => {
    if (args.images.length < 2) throw new UsageError('rebase needs the new stack (at least its base) and the layer to re-point, bottom first');
    const hasFrom = (args.from?.length ?? 0) > 0;
    if (hasFrom === args.unsafe) throw new UsageError('rebase needs either --from OLDSTACK... (safe: copies what differs) or --unsafe (re-point only)');
    const specs = imageSpecs(args.images, args.format);
    const layer = specs[specs.length - 1];
    if (layer.format && layer.format !== 'asif') throw new UsageError(`${layer.path}: only an ASIF layer can be re-pointed`);
    const progress = createProgress('rebase', progressMode(args));
    try {
      const result = await rebaseLayer(specs.slice(0, -1), layer.path, {
        from: hasFrom ? imageSpecs(args.from ?? []) : undefined,
        onWarning: printWarning,
        onProgress: (d, t) => progress.update(d, t),
      });
      progress.stop();
      const copied = hasFrom ? `, ${formatSize(result.bytesCopied)} copied from the old parent` : '';
      console.log(`${result.overlay} now stacks on ${result.parent} (${result.record}${copied})`);
    } finally {
      progress.stop();
    }
  },
};
