/** `--in-flight N` of the commands that copy a whole image (convert, commit). */
import type { Options } from 'yargs';
import { DEFAULT_IN_FLIGHT, DEFAULT_PIECE_BYTES } from '../stack/bulk-copy.js';
import { UsageError } from './usage-error.js';

export interface CopyArgs {
  'in-flight': number;
}

/** More pieces in flight than this buys nothing and only costs memory. */
const MAX_IN_FLIGHT = 64;

export const COPY_OPTIONS: Record<string, Options> = {
  'in-flight': {
    type: 'number',
    default: DEFAULT_IN_FLIGHT,
    describe: `pieces of ${DEFAULT_PIECE_BYTES / 1024 / 1024} MiB read and written at once (memory: that many pieces)`,
  },
};

export function inFlightFrom(args: CopyArgs): number {
  const n = args['in-flight'];
  if (!Number.isInteger(n) || n < 1 || n > MAX_IN_FLIGHT) throw new UsageError(`--in-flight must be a whole number from 1 to ${MAX_IN_FLIGHT}`);
  return n;
}
