/**
 * `stackbd convert STACK... -O OUT`: flattens an image or stack into one standalone image. The
 * output's format comes from `--output-format`, or else from its name (`.asif`, `.dmg`, `.raw`;
 * RAW when the name says nothing); a name that promises a format stackbd cannot write is refused.
 * A DMG is written as UDZO (zlib) or, with `--dmg-compression raw`, UDRO.
 */
import type { Argv, CommandModule } from 'yargs';
import type { ImageFormat, WritableFormat } from '../formats/layer.js';
import { isWritableFormat } from '../formats/open-image.js';
import { formatByName } from '../formats/probe.js';
import { convertStack } from '../stack/convert.js';
import { DiskImage } from '../stack/disk-image.js';
import { BACKING_OPTION, FORMAT_OPTION, imageSpecs, printWarning } from './image-args.js';
import { COPY_OPTIONS, inFlightFrom, type CopyArgs } from './copy-options.js';
import { createProgress, PROGRESS_OPTIONS, progressMode, type ProgressArgs } from './progress.js';
import { remoteOptionsFrom, withRemoteOptions, type RemoteArgs } from './remote-options.js';
import { formatSize } from './size.js';
import { UsageError } from './usage-error.js';

interface ConvertArgs extends ProgressArgs, RemoteArgs, CopyArgs {
  images: string[];
  format?: ImageFormat;
  backing: boolean;
  output: string;
  'output-format'?: OutputFormat;
  'dmg-compression': 'zlib' | 'raw';
  force: boolean;
}

type OutputFormat = WritableFormat | 'dmg';
const OUTPUT_FORMATS: readonly OutputFormat[] = ['raw', 'asif', 'dmg'];

function outputFormat(output: string, named: OutputFormat | undefined): OutputFormat {
  const byName = formatByName(output);
  if (named) return named;
  if (!byName) return 'raw';
  if (isWritableFormat(byName.name) || byName.name === 'dmg') return byName.name;
  throw new UsageError(`${output}: stackbd cannot write ${byName.label} images; name the output .raw, .asif or .dmg, or pass --output-format`);
}

export const convertCommand: CommandModule<object, ConvertArgs> = {
  command: 'convert <images..>',
  describe: 'flatten an image or stack into one new image, keeping holes',
  builder: (y: Argv) =>
    withRemoteOptions(y)
      .positional('images', { type: 'string', array: true, demandOption: true, describe: 'image, or stack bottom first' })
      .option('format', FORMAT_OPTION)
        .option('backing', BACKING_OPTION)
      .option('output', { alias: 'O', type: 'string', demandOption: true, describe: 'the new image' })
      .option('output-format', { choices: OUTPUT_FORMATS, describe: "the new image's format (default: from its name, else RAW)" })
      .option('dmg-compression', { choices: ['zlib', 'raw'] as const, default: 'zlib' as const, describe: 'DMG chunks: zlib (UDZO) or uncompressed (UDRO)' })
      .option('force', {
        type: 'boolean',
        default: false,
        describe: 'replace an existing output file (never one of the inputs, nor one another program has open)',
      })
      .options(PROGRESS_OPTIONS)
      .options(COPY_OPTIONS) as unknown as Argv<ConvertArgs>,
  handler: async (args) => {
    const format = outputFormat(args.output, args['output-format']);
    const inFlight = inFlightFrom(args);
    const remote = await remoteOptionsFrom(args, printWarning);
    const image = await DiskImage.open(imageSpecs(args.images, args.format, args.backing), { mode: 'readOnly', onWarning: printWarning, remote });
    const progress = createProgress('convert', progressMode(args));
    try {
      const result = await convertStack(image.stack, args.output, { format, dmgCompression: args['dmg-compression'], overwrite: args.force, inFlight, onProgress: (d, t) => progress.update(d, t) }).catch(
        (err: unknown) => {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new UsageError(`${args.output} already exists: add --force to replace it`);
          throw err;
        },
      );
      progress.stop();
      console.log(
        `wrote ${args.output}: ${format.toUpperCase()}, ${formatSize(result.size)} (${result.size} bytes), ${formatSize(result.dataBytes)} of data, the rest holes`,
      );
    } finally {
      progress.stop();
      await image.close();
    }
  },
};
