/** Runs a program to completion and returns its exit code and output, never throwing on failure. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { STACKBD_BIN } from './spawn-server.js';

const run = promisify(execFile);

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function runCommand(cmd: string, args: string[], timeoutMs = 60_000, env?: NodeJS.ProcessEnv): Promise<CommandResult> {
  try {
    const { stdout, stderr } = await run(cmd, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, env: env ? { ...process.env, ...env } : undefined });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? String(err) };
  }
}

/** The built `stackbd` CLI with these arguments (and extra environment variables). */
export function runStackbd(args: string[], timeoutMs?: number, env?: NodeJS.ProcessEnv): Promise<CommandResult> {
  return runCommand(process.execPath, [STACKBD_BIN, ...args], timeoutMs, env);
}
