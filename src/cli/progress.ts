/** A progress bar on stderr: on a terminal by default, forced on with -p, off with -q. */
import cliProgress from 'cli-progress';
import type { Options } from 'yargs';
import { formatSize } from './size.js';

export interface Progress {
  update(done: number, total: number): void;
  stop(): void;
}

export type ProgressMode = 'auto' | 'on' | 'off';

export interface ProgressArgs {
  progress?: boolean;
  quiet?: boolean;
}

export const PROGRESS_OPTIONS: Record<string, Options> = {
  progress: { alias: 'p', type: 'boolean', describe: 'show a progress bar even when stderr is not a terminal' },
  quiet: { alias: 'q', type: 'boolean', describe: 'no progress bar' },
};

export function progressMode(args: ProgressArgs): ProgressMode {
  if (args.quiet) return 'off';
  return args.progress ? 'on' : 'auto';
}

export function createProgress(label: string, mode: ProgressMode = 'auto'): Progress {
  const show = mode === 'on' || (mode === 'auto' && process.stderr.isTTY);
  if (!show) return { update: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar(
    {
      format: `${label} [{bar}] {percentage}% | {doneText} of {totalText} | {eta_formatted} left`,
      stream: process.stderr,
      hideCursor: true,
      noTTYOutput: mode === 'on',
      notTTYSchedule: 1000,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update(done, total) {
      const payload = { doneText: formatSize(done), totalText: formatSize(total) };
      if (!started) {
        bar.start(total, done, payload);
        started = true;
      } else bar.update(done, payload);
    },
    stop() {
      if (started) bar.stop();
      started = false;
    },
  };
}
