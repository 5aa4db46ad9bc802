/**
 * `stackbd check IMAGE`: every rule of the format. Exit status as qemu-img check's: 0 clean,
 * 1 the check could not be completed (the file cannot be opened or read), 2 corruption,
 * 3 leaked chunks only (harmless: reused on the next read-write open).
 */
import type { Argv, CommandModule } from 'yargs';
import { checkAsif } from '../formats/asif/index.js';
import type { ImageFormat } from '../formats/layer.js';
import { checkNameAgainstContent, formatByName, probeEntry } from '../formats/probe.js';
import { checkDmgCommand } from './check-dmg.js';
import { readOnlyBaseProblem } from './check-read-only.js';
import { BACKING_OPTION, FORMAT_OPTION, imageSpecs } from './image-args.js';
import { printJson } from './print.js';

interface CheckArgs {
  image: string;
  format?: ImageFormat;
  backing: boolean;
  json: boolean;
}

export const CheckExit = { clean: 0, notCompleted: 1, corrupt: 2, leaksOnly: 3 } as const;

export const checkCommand: CommandModule<object, CheckArgs> = {
  command: 'check <image>',
  describe: 'check an ASIF image (or the checksums of a DMG) for corruption (exit 0 clean, 1 check not completed, 2 corrupt, 3 leaked chunks only)',
  builder: (y: Argv) =>
    y
      .positional('image', { type: 'string', demandOption: true })
      .option('format', FORMAT_OPTION)
        .option('backing', BACKING_OPTION)
      .option('json', { type: 'boolean', default: false }) as unknown as Argv<CheckArgs>,
  handler: async (args) => {
    const [spec] = imageSpecs([args.image], args.format, args.backing);
    let format = spec.format;
    if (!format) {
      const entry = await probeEntry(spec.path);
      const named = formatByName(spec.path);
      // A file whose name promises a format its content lacks (a DMG without its trailer, an
      // ASIF whose header was overwritten) is a damaged file of that format: corruption.
      if (named?.name === 'dmg' && entry !== named) return checkDmgCommand(spec.path, args.json);
      try {
        checkNameAgainstContent(spec.path, entry);
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        process.exitCode = CheckExit.corrupt;
        if (args.json) printJson({ file: spec.path, format: named?.name, clean: false, errors: [message] });
        else console.log(`error: ${message}\n${spec.path}: CORRUPT`);
        return;
      }
      format = entry.name as ImageFormat;
    }
    if (format === 'dmg') return checkDmgCommand(spec.path, args.json);
    if (format === 'raw') {
      if (args.json) printJson({ file: spec.path, format, clean: true, errors: [], leakedChunks: [] });
      else console.log(`${spec.path}: RAW image, which has no structure to check`);
      return;
    }
    if (format !== 'asif') {
      // The other read-only bases have no repairable state: they either open and map, or say why not.
      const error = await readOnlyBaseProblem(spec.path, spec.noBacking);
      process.exitCode = error ? CheckExit.corrupt : CheckExit.clean;
      if (args.json) printJson({ file: spec.path, format, clean: error === null, errors: error ? [error] : [], leakedChunks: [] });
      else console.log(error ? `error: ${error}\n${spec.path}: CORRUPT` : `${spec.path}: ${format} image, opens and maps cleanly`);
      return;
    }
    const report = await checkAsif(spec.path);
    const corrupt = report.errors.length > 0 || report.doubleReferenced.length > 0;
    process.exitCode = corrupt ? CheckExit.corrupt : report.leakedChunks.length > 0 ? CheckExit.leaksOnly : CheckExit.clean;
    if (args.json) {
      printJson(report);
      return;
    }
    for (const error of report.errors) console.log(`error: ${error}`);
    if (report.doubleReferenced.length > 0) console.log(`error: chunks referenced twice: ${report.doubleReferenced.join(', ')}`);
    if (report.leakedChunks.length > 0) console.log(`leaked chunks (harmless, reclaimable): ${report.leakedChunks.length}`);
    const s = report.chunkStates;
    console.log(`chunks: ${s.full} full, ${s.partial} partly written, ${s.discarded} discarded, ${s.neverWritten} never written`);
    console.log(corrupt ? `${spec.path}: CORRUPT` : report.leakedChunks.length > 0 ? `${spec.path}: clean but for leaked chunks` : `${spec.path}: clean`);
  },
};
