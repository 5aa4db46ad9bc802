/**
 * Runs the real `stackbd serve` (the built CLI, bin/stackbd.js) as a child process on a port
 * it picks itself (--listen 127.0.0.1:0), reads the bound address from its JSON log, and stops
 * it by its own process id.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const STACKBD_BIN = path.join(PROJECT_ROOT, 'bin/stackbd.js');

export interface SpawnedServer {
  process: ChildProcess;
  pid: number;
  host: string;
  port: number;
  /** Unix socket path, when started with one. */
  socket?: string;
  /** nbd://127.0.0.1:PORT/NAME */
  uri(exportName: string): string;
  /** Everything the server wrote to stderr so far (JSON log lines). */
  logs(): string;
  /** Resolves with the first log line containing `text`, waiting up to `timeoutMs` for it. */
  waitForLog(text: string, timeoutMs?: number): Promise<string>;
  /** SIGTERM, then waits for the exit; resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface SpawnOptions {
  /** Extra arguments after `serve`, e.g. ['--export', 'disk=/tmp/a.raw']. */
  args: string[];
  /** Also listen on this unix socket. */
  socket?: string;
  /** Do not listen on TCP (unix socket only). */
  noTcp?: boolean;
  logLevel?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  /**
   * Run node with the environment and flags of bin/stackbd.js's interpreter line, as a user who
   * runs `stackbd` gets them (the tests start `node bin/stackbd.js`, which skips that line): for
   * tests about the server's memory.
   */
  asShipped?: boolean;
}

/** The KEY=VALUE settings and node flags of bin/stackbd.js's `#!/usr/bin/env -S … node …` line. */
export function shippedInterpreter(): { env: NodeJS.ProcessEnv; nodeArgs: string[] } {
  const first = readFileSync(STACKBD_BIN, 'utf8').split('\n', 1)[0];
  const words = first.replace(/^#!\S*env -S\s+/, '').split(/\s+/);
  const nodeAt = words.indexOf('node');
  if (!first.startsWith('#!') || nodeAt < 0) throw new Error(`bin/stackbd.js has no "env -S … node …" interpreter line: ${first}`);
  const env: NodeJS.ProcessEnv = {};
  for (const word of words.slice(0, nodeAt)) {
    const eq = word.indexOf('=');
    if (eq > 0) env[word.slice(0, eq)] = word.slice(eq + 1);
  }
  return { env, nodeArgs: words.slice(nodeAt + 1).filter((w) => w !== '') };
}

export async function spawnServer(options: SpawnOptions): Promise<SpawnedServer> {
  const shipped = options.asShipped ? shippedInterpreter() : { env: {}, nodeArgs: [] };
  const args = [...shipped.nodeArgs, STACKBD_BIN, 'serve', ...options.args, '--log-level', options.logLevel ?? 'info'];
  if (!options.noTcp) args.push('--listen', '127.0.0.1:0');
  if (options.socket) args.push('--socket', options.socket);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...shipped.env, ...options.env } });
  let stderr = '';
  let stdout = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const wanted = (options.noTcp ? 0 : 1) + (options.socket ? 1 : 0);
  const ready = new Promise<{ host: string; port: number }>((resolve, reject) => {
    let found = 0;
    let tcp = { host: '127.0.0.1', port: 0 };
    const timer = setTimeout(() => reject(new Error(`stackbd did not start listening in time; stderr:\n${stderr}`)), options.timeoutMs ?? 20_000);
    child.stderr!.on('data', (d: Buffer) => {
      const before = stderr.length;
      stderr += d.toString();
      for (const line of stderr.slice(before === 0 ? 0 : stderr.lastIndexOf('\n', before) + 1).split('\n')) {
        if (!line.includes('"listening"')) continue;
        try {
          const entry = JSON.parse(line) as { msg?: string; tcp?: { host: string; port: number } };
          if (entry.msg !== 'listening') continue;
          if (entry.tcp) tcp = entry.tcp;
          found++;
        } catch {
          continue;
        }
      }
      if (found >= wanted) {
        clearTimeout(timer);
        resolve(tcp);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`stackbd exited with ${code} before listening; stderr:\n${stderr}\nstdout:\n${stdout}`));
    });
  });
  let address: { host: string; port: number };
  try {
    address = await ready;
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const pid = child.pid!;
  return {
    process: child,
    pid,
    host: address.host,
    port: address.port,
    socket: options.socket,
    uri: (name) => `nbd://${address.host}:${address.port}/${encodeURIComponent(name)}`,
    logs: () => stderr,
    waitForLog: async (text: string, timeoutMs = 10_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const line = stderr.split('\n').find((l) => l.includes(text));
        if (line) return line;
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`no log line with ${text}; stderr:\n${stderr}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      process.kill(pid, signal);
      const timer = setTimeout(() => process.kill(pid, 'SIGKILL'), 15_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
