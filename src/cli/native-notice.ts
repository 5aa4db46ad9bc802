/** The server's one log line about the optional native addon: loaded, or what its absence costs. */
import type { Logger } from 'pino';
import { nativeStatus, WITHOUT_NATIVE } from '../io/native.js';

export function logNativeStatus(log: Logger, env: NodeJS.ProcessEnv = process.env): void {
  const status = nativeStatus(env);
  if (status.loaded) {
    log.debug({ addon: status.path }, 'native fast paths loaded');
    return;
  }
  log.info({ reason: status.reason }, `native fast paths not loaded (${status.reason}): serving on plain node:fs, so ${WITHOUT_NATIVE.join('; ')}`);
}
