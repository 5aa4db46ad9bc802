/** `stackbd check IMAGE`: every rule of the format; exit 0 clean, 1 leaked chunks only, 2 corrupt. */
import type { Argv, CommandModule } from 'yargs';
import { checkAsif } from '../formats/asif/index.js';
import { probeFormat } from '../formats/probe.js';
import { readOnlyBaseProblem } from './check-read-only.js';
import { printJson } from './print.js';

interface CheckArgs {
  image: string;
  json: boolean;
}

export const checkCommand: CommandModule<object, CheckArgs> = {
  command: 'check <image>',
  describe: 'check an ASIF image for corruption and leaked chunks (exit 0 clean, 1 leaks only, 2 corrupt)',
  builder: (y: Argv) =>
    y
      .positional('image', { type: 'string', demandOption: true })
      .option('json', { type: 'boolean', default: false }) as unknown as Argv<CheckArgs>,
  handler: async (args) => {
    const format = await probeFormat(args.image);
    if (format !== 'asif') {
      // The read-only bases have no repairable state: they either open and map, or say why not.
      const error = format === 'raw' ? null : await readOnlyBaseProblem(args.image);
      process.exitCode = error ? 2 : 0;
      if (args.json) printJson({ file: args.image, format, clean: error === null, errors: error ? [error] : [], leakedChunks: [] });
      else console.log(error ? `error: ${error}\n${args.image}: CORRUPT` : `${args.image}: ${format === 'raw' ? 'RAW image, nothing to check' : `${format} image, opens and maps cleanly`}`);
      return;
    }
    const report = await checkAsif(args.image);
    const corrupt = report.errors.length > 0 || report.doubleReferenced.length > 0;
    process.exitCode = corrupt ? 2 : report.leakedChunks.length > 0 ? 1 : 0;
    if (args.json) {
      printJson(report);
      return;
    }
    for (const error of report.errors) console.log(`error: ${error}`);
    if (report.doubleReferenced.length > 0) console.log(`error: chunks referenced twice: ${report.doubleReferenced.join(', ')}`);
    if (report.leakedChunks.length > 0) console.log(`leaked chunks (harmless, reclaimable): ${report.leakedChunks.length}`);
    const s = report.chunkStates;
    console.log(`chunks: ${s.full} full, ${s.partial} partly written, ${s.discarded} discarded, ${s.neverWritten} never written`);
    console.log(corrupt ? `${args.image}: CORRUPT` : report.leakedChunks.length > 0 ? `${args.image}: clean but for leaked chunks` : `${args.image}: clean`);
  },
};
