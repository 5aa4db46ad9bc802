/**
 * Readiness for systemd (Type=notify, sd_notify(3)): READY=1 once every listener is up,
 * STOPPING=1 when a shutdown starts. A message is one datagram to the unix socket named by
 * NOTIFY_SOCKET, which node:dgram cannot send (it has UDP only). Two ways, in this order:
 * - the native addon's sdNotify: the main process sends it itself (works with any NotifyAccess);
 * - systemd-notify(1) as a child process (package systemd, present wherever systemd runs):
 *   systemd attributes its message to the service only with NotifyAccess=all, which the example
 *   unit sets; systemd-notify waits until systemd has taken the message in (a barrier), so the
 *   child exiting at once does not lose it.
 * Without NOTIFY_SOCKET nothing is sent.
 */
import { spawn } from 'node:child_process';
import type { Logger } from 'pino';
import { loadNative, type NativeFastPaths } from '../io/native.js';

export type NotifyOutcome = { sent: 'native' | 'systemd-notify' } | { sent: false; reason: string } | null;

/** Longest a systemd-notify child may take (it waits up to 5 s for its barrier itself). */
const CHILD_TIMEOUT_MS = 10_000;

function runSystemdNotify(assignments: string[], env: NodeJS.ProcessEnv): Promise<NotifyOutcome> {
  return new Promise((resolve) => {
    const child = spawn('systemd-notify', assignments, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_TIMEOUT_MS);
    child.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const missing = err.code === 'ENOENT' ? 'systemd-notify is not installed and the native addon is not loaded' : err.message;
      resolve({ sent: false, reason: missing });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve({ sent: 'systemd-notify' });
      else resolve({ sent: false, reason: `systemd-notify ${signal ? `was killed by ${signal}` : `exited with ${code}`}: ${stderr.trim()}` });
    });
  });
}

/** Sends `assignments` (e.g. ['READY=1', 'STATUS=serving']) to the service manager. */
export async function sdNotify(assignments: string[], env: NodeJS.ProcessEnv = process.env, native: NativeFastPaths | null = loadNative(env)): Promise<NotifyOutcome> {
  const socket = env.NOTIFY_SOCKET;
  if (!socket) return null;
  if (native?.sdNotify && (socket.startsWith('/') || socket.startsWith('@'))) {
    const result = native.sdNotify(socket, assignments.join('\n'));
    if (result === 0) return { sent: 'native' };
    // A socket the addon cannot reach may still be reached by systemd-notify (e.g. vsock:).
  }
  return runSystemdNotify(assignments, env);
}

/** sdNotify, with a warning in the log when the message could not be sent. */
export async function notifyServiceManager(log: Logger, assignments: string[]): Promise<void> {
  const outcome = await sdNotify(assignments);
  if (outcome === null) return;
  if (outcome.sent) log.debug({ notify: assignments, via: outcome.sent }, 'told the service manager');
  else log.warn({ notify: assignments, reason: outcome.reason }, `could not tell the service manager ${assignments[0]} (${outcome.reason})`);
}
