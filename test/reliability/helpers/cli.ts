/**
 * The built `stackbd` CLI as a child process, for hostile inputs: how it ended (exit code or
 * signal), what it printed, and whether it kept to a time limit. A crash is a signal or a
 * JavaScript stack trace on stderr; a hang is running past the limit (the child is then
 * killed by its pid).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { STACKBD_BIN } from '../../helpers/spawn-server.js';
import { exitOf, type Exit } from './proc.js';

export interface CliResult extends Exit {
  stdout: string;
  stderr: string;
  ms: number;
  timedOut: boolean;
}

interface Launched {
  child: ChildProcess;
  out: { stdout: string; stderr: string; timedOut: boolean };
  started: number;
  /** Resolves with the result once the child has exited. */
  finish(): Promise<CliResult>;
  /** Lifts the time limit. */
  disarm(): void;
}

/** Starts `stackbd ARGS`, collecting its output; past `timeoutMs` it is killed by its pid. */
function launch(args: string[], timeoutMs: number): Launched {
  const started = Date.now();
  const child = spawn(process.execPath, [STACKBD_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '', timedOut: false };
  child.stdout!.on('data', (d: Buffer) => (out.stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out.stderr += d.toString()));
  const timer = setTimeout(() => {
    out.timedOut = true;
    if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
  }, timeoutMs);
  const exited = exitOf(child).finally(() => clearTimeout(timer));
  return {
    child,
    out,
    started,
    finish: async () => {
      const exit = await exited;
      await new Promise<void>((r) => setImmediate(r));
      return { ...exit, ...out, ms: Date.now() - started };
    },
    disarm: () => clearTimeout(timer),
  };
}

/** Runs `stackbd ARGS` to its end, or kills it after `timeoutMs`. */
export function runCli(args: string[], timeoutMs: number): Promise<CliResult> {
  return launch(args, timeoutMs).finish();
}

/** A JavaScript stack trace in the output: an error nobody turned into a message. */
export function hasStackTrace(text: string): boolean {
  return /\n\s+at .+[:(]\d+:\d+\)?/.test(text) || /^\s+at .+:\d+:\d+/m.test(text);
}

/** Lines of stderr that are not pino JSON log entries. */
export function plainLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('{'));
}

export type ServeStart =
  | { kind: 'exited'; result: CliResult }
  | { kind: 'listening'; child: ChildProcess; pid: number; port: number; stderr: () => string };

/**
 * Starts `stackbd serve ARGS --listen 127.0.0.1:0`; resolves when it listens (with the port
 * from its log) or when it exits first. Past `timeoutMs` before listening it is killed and
 * reported as exited.
 */
export async function startServe(args: string[], timeoutMs: number): Promise<ServeStart> {
  const run = launch(['serve', ...args, '--listen', '127.0.0.1:0', '--log-level', 'info'], timeoutMs);
  const listening = new Promise<number>((resolve) => {
    run.child.stderr!.on('data', () => {
      for (const line of run.out.stderr.split('\n')) {
        if (!line.includes('"listening"')) continue;
        try {
          const entry = JSON.parse(line) as { msg?: string; tcp?: { port: number } };
          if (entry.msg === 'listening' && entry.tcp) resolve(entry.tcp.port);
        } catch {
          // a line cut in two; the rest comes with the next chunk
        }
      }
    });
  });
  const first = await Promise.race([listening, run.finish()]);
  if (typeof first !== 'number') return { kind: 'exited', result: first };
  // Listening: the time limit was for starting; the test stops the server itself.
  run.disarm();
  return { kind: 'listening', child: run.child, pid: run.child.pid!, port: first, stderr: () => run.out.stderr };
}
