/** `stackbd ctl ACTION`: talks to a running server's admin API. */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { adminRequest, type AdminTarget } from './admin-client.js';
import { parseExportSpec } from './export-spec.js';
import { CommandFailed, UsageError } from './usage-error.js';

interface CtlArgs {
  action: string;
  args: string[];
  socket?: string;
  url?: string;
  'token-file'?: string;
  'read-only': boolean;
  description?: string;
  new?: string;
  ranges?: string;
  jobs?: number;
}

const ACTIONS = ['health', 'list', 'show', 'add', 'remove', 'snapshot', 'warm', 'metrics'] as const;

async function target(args: CtlArgs): Promise<AdminTarget> {
  const socketPath = args.socket ?? process.env.STACKBD_ADMIN_SOCKET;
  if (!socketPath && !args.url) throw new UsageError('say where the server is: --socket PATH (or STACKBD_ADMIN_SOCKET) or --url http://127.0.0.1:PORT');
  const token = args['token-file'] ? (await fs.readFile(args['token-file'], 'utf8')).trim() : undefined;
  return { ...(args.url ? { url: args.url } : { socketPath }), ...(token ? { token } : {}) };
}

function one(args: CtlArgs, what: string): string {
  const value = args.args[0];
  if (!value) throw new UsageError(`ctl ${args.action} needs ${what}`);
  return value;
}

export const ctlCommand: CommandModule<object, CtlArgs> = {
  command: 'ctl <action> [args..]',
  describe: `control a running server through its admin API (${ACTIONS.join(', ')})`,
  builder: (y: Argv) =>
    y
      .positional('action', { choices: ACTIONS, demandOption: true })
      .positional('args', { type: 'string', array: true, default: [] })
      .option('socket', { type: 'string', describe: 'the admin API unix socket (serve --admin-socket)' })
      .option('url', { type: 'string', describe: 'the admin API over TCP, e.g. http://127.0.0.1:10810' })
      .option('token-file', { type: 'string', describe: 'bearer token for --url' })
      .option('read-only', { type: 'boolean', default: false, describe: 'add: serve the new export read-only' })
      .option('description', { type: 'string', describe: 'add: description of the new export' })
      .option('new', { type: 'string', describe: 'snapshot: file of the new overlay' })
      .option('ranges', { type: 'string', describe: 'warm: only the ranges in this file (lines "OFFSET LENGTH", or map JSON), read by the server' })
      .option('jobs', { type: 'number', describe: 'warm: pieces read at once (default 4)' })
      .example('$0 ctl add vm2=base.raw,overlay2.asif --socket /run/stackbd/admin.sock', 'serve a new export')
      .example('$0 ctl snapshot vm --new snap-1.asif --socket /run/stackbd/admin.sock', 'freeze the top overlay, continue on a new one')
      .example('$0 ctl warm vm --ranges records/vm.ranges --socket /run/stackbd/admin.sock', "fill the export's cache with what a recorded boot read") as unknown as Argv<CtlArgs>,
  handler: async (args) => {
    const t = await target(args);
    let response;
    switch (args.action) {
      case 'health':
        response = await adminRequest(t, 'GET', '/health');
        break;
      case 'list':
        response = await adminRequest(t, 'GET', '/exports');
        break;
      case 'show':
        response = await adminRequest(t, 'GET', `/exports/${encodeURIComponent(one(args, 'an export name'))}`);
        break;
      case 'metrics':
        response = await adminRequest(t, 'GET', '/metrics');
        break;
      case 'add': {
        const spec = parseExportSpec(one(args, 'NAME=BASE[,LAYER...]'));
        response = await adminRequest(t, 'POST', '/exports', {
          name: spec.name,
          layers: spec.paths,
          readOnly: args['read-only'],
          ...(args.description ? { description: args.description } : {}),
        });
        break;
      }
      case 'remove':
        response = await adminRequest(t, 'DELETE', `/exports/${encodeURIComponent(one(args, 'an export name'))}`);
        break;
      case 'snapshot': {
        if (!args.new) throw new UsageError('ctl snapshot needs --new PATH for the new overlay');
        response = await adminRequest(t, 'POST', `/exports/${encodeURIComponent(one(args, 'an export name'))}/snapshot`, { path: args.new });
        break;
      }
      case 'warm': {
        const body = {
          ...(args.ranges !== undefined ? { rangesFile: path.resolve(args.ranges) } : {}),
          ...(args.jobs !== undefined ? { jobs: args.jobs } : {}),
        };
        response = await adminRequest(t, 'POST', `/exports/${encodeURIComponent(one(args, 'an export name'))}/warm`, body);
        break;
      }
      default:
        throw new UsageError(`unknown action ${args.action}`);
    }
    if (response.status >= 400) {
      let message = response.body;
      try {
        message = (JSON.parse(response.body) as { error?: string }).error ?? message;
      } catch {
        // not JSON: print as it came
      }
      throw new CommandFailed(`server answered ${response.status}: ${message}`);
    }
    if (response.body) console.log(args.action === 'metrics' ? response.body.trimEnd() : JSON.stringify(JSON.parse(response.body), null, 2));
  },
};
