/** What the reliability tests read about a server process: its memory and how it ended. */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';

/** Resident set size of a live process in KiB (VmRSS of /proc/PID/status). */
export function rssKiB(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (!match) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(match[1]);
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Resolves when the child has exited (at once if it already has). */
export function exitOf(child: ChildProcess): Promise<Exit> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

/** Sends `signal` to the child by its pid and waits for it to exit. */
export async function signalAndWait(child: ChildProcess, signal: NodeJS.Signals): Promise<Exit> {
  if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, signal);
  return exitOf(child);
}
