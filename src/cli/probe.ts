/**
 * `stackbd probe URI`: performs an NBD handshake and reports what the server offers; exit 0 when
 * the export (or, without a name, the export list) answered. Used as a container health check.
 */
import type { Argv, CommandModule } from 'yargs';
import { NbdClient } from '../nbd/client.js';
import { parseNbdUri } from '../nbd/uri.js';
import { printJson } from './print.js';
import { CommandFailed, UsageError } from './usage-error.js';

interface ProbeArgs {
  uri: string;
  json: boolean;
  timeout: string;
}

async function probe(args: ProbeArgs): Promise<unknown> {
  let target;
  try {
    target = parseNbdUri(args.uri);
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
  if (target.tls) throw new UsageError('probe does not speak TLS; probe the plaintext listener or use nbdinfo');
  if (target.exportName === '' && !args.uri.endsWith('/')) {
    return { exports: await NbdClient.list(target) };
  }
  const client = await NbdClient.connect(target, { exportName: target.exportName });
  try {
    return { export: target.exportName, size: client.size, flags: client.flags, mode: client.mode };
  } finally {
    await client.disconnect();
  }
}

export const probeCommand: CommandModule<object, ProbeArgs> = {
  command: 'probe <uri>',
  describe: 'handshake with an NBD server: nbd://HOST:PORT lists exports, nbd://HOST:PORT/NAME opens one',
  builder: (y: Argv) =>
    y
      .positional('uri', { type: 'string', demandOption: true })
      .option('json', { type: 'boolean', default: false })
      .option('timeout', { type: 'string', default: '5', describe: 'seconds before giving up' }) as unknown as Argv<ProbeArgs>,
  handler: async (args) => {
    const seconds = Number(args.timeout);
    if (args.timeout.trim() === '' || !Number.isFinite(seconds) || seconds <= 0) {
      throw new UsageError(`--timeout ${JSON.stringify(args.timeout)} is not a number of seconds above 0`);
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new CommandFailed(`${args.uri}: no answer within ${args.timeout} s`)), seconds * 1000);
    });
    try {
      const result = await Promise.race([probe(args), timeout]).catch((err: unknown) => {
        if (err instanceof UsageError || err instanceof CommandFailed) throw err;
        throw new CommandFailed(`${args.uri}: ${err instanceof Error ? err.message : String(err)}`);
      });
      if (args.json) printJson(result);
      else console.log(`${args.uri}: ok ${JSON.stringify(result)}`);
    } finally {
      clearTimeout(timer);
    }
  },
};
