/**
 * The command-line options of remote bases (http(s):// and s3:// URLs given where a base image
 * path goes), shared by serve, info, map, convert and append.
 */
import type { Argv } from 'yargs';
import { HeaderFileError, loadHeaderFile } from '../remote/header-file.js';
import { RemoteOptionError, resolveRemoteOptions, type RemoteOptions, type S3Addressing } from '../remote/options.js';
import { parseSize } from './size.js';
import { UsageError } from './usage-error.js';

export interface RemoteArgs {
  'remote-block-size'?: string;
  'remote-connections'?: number;
  'remote-cache'?: string;
  'remote-retries'?: number;
  'remote-timeout'?: number;
  'ca-file'?: string;
  'header-file'?: string;
  's3-endpoint'?: string;
  's3-addressing'?: S3Addressing;
}

const GROUP = 'Remote bases (http://, https://, s3://):';

export function withRemoteOptions<T>(y: Argv<T>): Argv<T & RemoteArgs> {
  return y
    .option('remote-block-size', { type: 'string', group: GROUP, describe: 'bytes fetched and cached per block, a power of two (default 64K; sequential reads are merged into requests of up to 4M)' })
    .option('remote-connections', { type: 'number', group: GROUP, describe: 'keep-alive connections per origin (default 16)' })
    .option('remote-cache', { type: 'string', group: GROUP, describe: 'memory kept for recently fetched blocks (default 32M)' })
    .option('remote-retries', { type: 'number', group: GROUP, describe: 'retries of a failed read, with backoff (default 5)' })
    .option('remote-timeout', { type: 'number', group: GROUP, describe: 'seconds to wait for a response or for more of its body (default 30)' })
    .option('ca-file', { type: 'string', group: GROUP, describe: 'PEM file of CA certificates trusted for https (besides the system ones)' })
    .option('header-file', { type: 'string', group: GROUP, describe: 'file of extra request headers, lines "Name: value" (sent to the URL\'s origin only)' })
    .option('s3-endpoint', { type: 'string', group: GROUP, describe: 'S3-compatible endpoint URL (default AWS_ENDPOINT_URL, else AWS)' })
    .option('s3-addressing', {
      choices: ['auto', 'path', 'virtual'] as const,
      group: GROUP,
      describe: 'bucket in the path or the host name (auto: path for custom endpoints)',
    }) as unknown as Argv<T & RemoteArgs>;
}

/** The options the arguments ask for, checked now so that a mistake is a usage error. */
export async function remoteOptionsFrom(args: RemoteArgs, onWarning?: (message: string) => void): Promise<RemoteOptions> {
  const timeoutMs = args['remote-timeout'] === undefined ? undefined : Math.round(args['remote-timeout'] * 1000);
  let headers: Record<string, string> | undefined;
  if (args['header-file'] !== undefined) {
    try {
      headers = await loadHeaderFile(args['header-file']);
    } catch (err) {
      throw err instanceof HeaderFileError ? new UsageError(`--header-file ${err.message}`) : err;
    }
  }
  const options: RemoteOptions = {
    ...(args['remote-block-size'] !== undefined ? { blockSize: parseSize(args['remote-block-size']) } : {}),
    ...(args['remote-connections'] !== undefined ? { connections: args['remote-connections'] } : {}),
    ...(args['remote-cache'] !== undefined ? { cacheBytes: parseSize(args['remote-cache']) } : {}),
    ...(args['remote-retries'] !== undefined ? { retries: args['remote-retries'] } : {}),
    ...(timeoutMs !== undefined ? { timeouts: { headersMs: timeoutMs, bodyMs: timeoutMs } } : {}),
    ...(args['ca-file'] !== undefined ? { caFile: args['ca-file'] } : {}),
    ...(headers ? { headers } : {}),
    ...(args['s3-endpoint'] !== undefined ? { s3Endpoint: args['s3-endpoint'] } : {}),
    ...(args['s3-addressing'] !== undefined ? { s3Addressing: args['s3-addressing'] } : {}),
    ...(onWarning ? { onWarning } : {}),
  };
  try {
    resolveRemoteOptions(options);
  } catch (err) {
    throw err instanceof RemoteOptionError ? new UsageError(err.message) : err;
  }
  return options;
}
