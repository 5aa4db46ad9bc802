/** A progress bar on a terminal (stderr), nothing otherwise. */
import cliProgress from 'cli-progress';
import { formatSize } from './size.js';

export interface Progress {
  update(done: number, total: number): void;
  stop(): void;
}

export function createProgress(label: string): Progress {
  if (!process.stderr.isTTY) return { update: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar(
    {
      format: `${label} [{bar}] {percentage}% | {doneText} of {totalText} | {eta_formatted} left`,
      stream: process.stderr,
      hideCursor: true,
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
    },
  };
}
