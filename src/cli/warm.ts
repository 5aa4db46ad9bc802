/**
 * `stackbd warm STACK... [--ranges FILE] [--jobs N]`: fills the stack's cache layer ahead of
 * time (src/stack/warm.ts), with a progress bar. What it stored is synced every few seconds and
 * at the end, so a warm stopped by Ctrl-C (or killed) is resumed by running it again: ranges the
 * cache holds are skipped without reading below.
 */
import type { Argv, CommandModule } from 'yargs';
import type { ImageFormat } from '../formats/layer.js';
import { DiskImage } from '../stack/disk-image.js';
import { warmStack, type WarmResult } from '../stack/warm.js';
import { RangesFileError, readRangesFile } from '../stack/warm-ranges.js';
import { FORMAT_OPTION, imageSpecs, printWarning } from './image-args.js';
import { printJson } from './print.js';
import { createProgress, PROGRESS_OPTIONS, progressMode, type ProgressArgs } from './progress.js';
import { remoteOptionsFrom, withRemoteOptions, type RemoteArgs } from './remote-options.js';
import { formatSize, parseSize } from './size.js';
import { UsageError } from './usage-error.js';

interface WarmArgs extends ProgressArgs, RemoteArgs {
  images: string[];
  format?: ImageFormat;
  ranges?: string;
  jobs: number;
  'cache-max-size'?: string;
  'sync-interval': number;
  json: boolean;
}

/** One line saying what a warm did. */
export function describeWarm(r: WarmResult): string {
  const parts = [
    `read ${formatSize(r.readBytes)} from below the cache (stored ${formatSize(r.storedDataBytes)} as data, ${formatSize(r.storedZeroBytes)} as zeros)`,
    `skipped ${formatSize(r.cachedBytes)} already cached`,
  ];
  if (r.hiddenBytes > 0) parts.push(`${formatSize(r.hiddenBytes)} held by the layers above`);
  const end = r.stopped === 'limit' ? `; stopped at the cache's limit, ${formatSize(r.leftBytes)} left` : r.stopped === 'aborted' ? `; interrupted, ${formatSize(r.leftBytes)} left (run it again to go on)` : '';
  return `${parts.join(', ')} in ${r.seconds.toFixed(1)} s${end}`;
}

export const warmCommand: CommandModule<object, WarmArgs> = {
  command: 'warm <images..>',
  describe: "fill a stack's cache layer ahead of time (all of it, or the ranges a recorded boot read)",
  builder: (y: Argv) =>
    withRemoteOptions(y)
      .positional('images', { type: 'string', array: true, demandOption: true, describe: 'the stack, bottom first; it must have a cache layer' })
      .option('format', FORMAT_OPTION)
      .option('ranges', {
        type: 'string',
        describe: 'warm only these ranges: lines "OFFSET LENGTH" (serve --record-reads writes them), or the JSON of stackbd map --json / qemu-img map',
      })
      .option('jobs', { type: 'number', default: 8, describe: 'pieces (of 4 MiB) read and stored at once' })
      .option('cache-max-size', { type: 'string', describe: "the cache's limit, instead of the one it records" })
      .option('sync-interval', { type: 'number', default: 5, describe: 'seconds between syncs of what was stored (an interrupted warm keeps it)' })
      .option('json', { type: 'boolean', default: false, describe: 'print what was done as JSON' })
      .options(PROGRESS_OPTIONS)
      .example('$0 warm https://example.com/golden.raw cache.asif overlay.asif', 'warm the whole cache')
      .example('$0 warm --ranges records/vm.ranges base.raw cache.asif', 'warm what a recorded boot read') as unknown as Argv<WarmArgs>,
  handler: async (args) => {
    if (!Number.isInteger(args.jobs) || args.jobs < 1 || args.jobs > 256) throw new UsageError('--jobs must be a whole number from 1 to 256');
    if (!(args['sync-interval'] > 0)) throw new UsageError('--sync-interval must be more than 0 seconds');
    const ranges = args.ranges === undefined ? null : await readRangesFile(args.ranges).catch((err: unknown) => {
      throw err instanceof RangesFileError ? new UsageError(`--ranges ${err.message}`) : err;
    });
    const cacheLimit = args['cache-max-size'] === undefined ? undefined : parseSize(args['cache-max-size'], '--cache-max-size');
    const remote = await remoteOptionsFrom(args, printWarning);
    const image = await DiskImage.open(imageSpecs(args.images, args.format), { mode: 'readOnly', onWarning: printWarning, remote, cacheLimit });
    const progress = createProgress('warm', progressMode(args));
    const abort = new AbortController();
    const onSignal = (): void => abort.abort();
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    let syncing: Promise<void> = Promise.resolve();
    const timer = setInterval(() => {
      syncing = syncing.then(() => image.flush()).catch((err: unknown) => printWarning(`sync failed: ${err instanceof Error ? err.message : String(err)}`));
    }, args['sync-interval'] * 1000);
    let result: WarmResult;
    try {
      result = await warmStack(image.stack, ranges, { jobs: args.jobs, onProgress: (d, t) => progress.update(d, t), onWarning: printWarning, signal: abort.signal });
    } finally {
      clearInterval(timer);
      progress.stop();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      await syncing;
      await image.close();
    }
    if (args.json) printJson(result);
    else console.log(`warmed ${image.stack.layers.find((l) => l.layerType === 'cache')?.path}: ${describeWarm(result)}`);
    if (result.stopped === 'aborted') process.exitCode = 130;
  },
};
