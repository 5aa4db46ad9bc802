/** `--export NAME=PATH[,PATH...]` (bottom layer first), or a bare `PATH[,PATH...]` for the default export "". */
import { UsageError } from './usage-error.js';

export interface ExportSpec {
  name: string;
  paths: string[];
}

export function parseExportSpec(text: string): ExportSpec {
  const eq = text.indexOf('=');
  // A '=' after a '/' belongs to a file name, not to NAME=.
  const named = eq >= 0 && !text.slice(0, eq).includes('/');
  const name = named ? text.slice(0, eq) : '';
  const paths = (named ? text.slice(eq + 1) : text).split(',').map((p) => p.trim());
  if (paths.some((p) => p === '')) throw new UsageError(`--export ${text}: empty file name (expected NAME=BASE[,LAYER...])`);
  if (Buffer.byteLength(name) > 4096) throw new UsageError(`--export ${text}: export name longer than 4096 bytes`);
  return { name, paths };
}
