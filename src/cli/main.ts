/**
 * The `stackbd` command line: one yargs command per file. Usage mistakes print one line and
 * exit 2; failures (a corrupted image, a busy port) print one line and exit 1.
 */
import fs from 'node:fs';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { StackbdError } from '../block/errors.js';
import { ConfigError } from '../server/config.js';
import { TlsConfigError } from '../server/tls.js';
import { appendCommand } from './append.js';
import { checkCommand } from './check.js';
import { commitCommand } from './commit.js';
import { convertCommand } from './convert.js';
import { createCommand } from './create.js';
import { ctlCommand } from './ctl.js';
import { infoCommand } from './info.js';
import { mapCommand } from './map.js';
import { probeCommand } from './probe.js';
import { rebaseCommand } from './rebase.js';
import { serveCommand } from './serve.js';
import { truncateCommand } from './truncate.js';
import { warmCommand } from './warm.js';
import { CommandFailed, UsageError } from './usage-error.js';

/** The exit statuses, as the README's table gives them. */
const EXIT_CODES = [
  'Exit status: 0 done; 1 failed (the one line on stderr says why); 2 usage mistake.',
  'check: 0 clean; 1 the check could not be completed; 2 corruption found; 3 leaked chunks only (harmless).',
].join('\n');

function packageVersion(): string {
  const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function describeFailure(err: unknown): string {
  if (err instanceof StackbdError || err instanceof UsageError || err instanceof CommandFailed || err instanceof ConfigError || err instanceof TlsConfigError) {
    return err.message;
  }
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e.code === 'string' && e.message) return e.message;
  return err instanceof Error ? (err.stack ?? err.message) : String(err);
}

export async function main(argv: string[]): Promise<void> {
  const cli = yargs(argv)
    .scriptName('stackbd')
    .usage('$0 <command> [options]\n\nServes stacked disk images (RAW or ASIF base, cache and overlay layers) over NBD.')
    .command(serveCommand)
    .command(createCommand)
    .command(infoCommand)
    .command(mapCommand)
    .command(checkCommand)
    .command(appendCommand)
    .command(truncateCommand)
    .command(commitCommand)
    .command(rebaseCommand)
    .command(convertCommand)
    .command(warmCommand)
    .command(ctlCommand)
    .command(probeCommand)
    .demandCommand(1, 'name a command (see --help)')
    .recommendCommands()
    .strict()
    .epilogue(EXIT_CODES)
    .version(packageVersion())
    .help()
    .alias('h', 'help')
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .fail((message, err) => {
      if (err) throw err;
      // yargs says only "Did you mean X?" for a misspelt command: name what was typed.
      if (message.startsWith('Did you mean')) throw new UsageError(`unknown command "${argv[0]}". ${message}`);
      throw new UsageError(message);
    });
  try {
    await cli.parseAsync();
  } catch (err) {
    process.stderr.write(`stackbd: ${describeFailure(err)}\n`);
    process.exitCode = err instanceof UsageError || err instanceof ConfigError || err instanceof TlsConfigError ? 2 : 1;
  }
}

await main(hideBin(process.argv));
