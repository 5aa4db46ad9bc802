/**
 * Real NBD servers as upstreams for nbd:// bases: nbdkit and qemu-nbd, started in the
 * foreground on a unix socket (or, for nbdkit, on a loopback TCP port bound by a small launcher
 * and handed over by socket activation, so the port is picked by the system and can be bound
 * again after a restart), and stopped by their own pid.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';

export interface Upstream {
  readonly pid: number;
  readonly child: ChildProcess;
  /** The unix socket, or the TCP port. */
  readonly socket?: string;
  readonly port?: number;
  /** An nbd:// URI of the export (with `query` appended). */
  uri(exportName?: string, query?: string): string;
  /** Everything it wrote to stderr. */
  stderr(): string;
  /** SIGTERM (or `signal`) to its pid, then waits for it to exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

async function connectable(where: { path: string } | { port: number }, child: ChildProcess, stderr: () => string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the upstream exited before it listened:\n${stderr()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = 'path' in where ? net.connect(where.path) : net.connect({ host: '127.0.0.1', port: where.port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`the upstream did not listen in time:\n${stderr()}`);
}

function track(child: ChildProcess): { stderr: () => string; exited: Promise<void> } {
  let text = '';
  child.stderr?.on('data', (d: Buffer) => (text += d.toString()));
  child.stdout?.on('data', (d: Buffer) => (text += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { stderr: () => text, exited };
}

function stopper(child: ChildProcess, exited: Promise<void>): (signal?: NodeJS.Signals) => Promise<void> {
  return async (signal = 'SIGTERM') => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, signal);
    const timer = setTimeout(() => {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
    }, 10_000);
    await exited;
    clearTimeout(timer);
  };
}

/** Binds 127.0.0.1:port (0: any), puts the socket at fd 3 and execs the program, which then has the launcher's pid. */
const LAUNCHER = [
  'import os, socket, sys',
  's = socket.socket()',
  's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
  "s.bind(('127.0.0.1', int(sys.argv[1])))",
  's.listen(64)',
  "sys.stderr.write('PORT=%d\\n' % s.getsockname()[1]); sys.stderr.flush()",
  'os.dup2(s.fileno(), 3); os.set_inheritable(3, True)',
  "os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid())",
  'os.execvp(sys.argv[2], sys.argv[2:])',
].join('\n');

export type Listen = { socket: string } | { port: number };

/** `nbdkit -f [--filter=…] PLUGIN ARGS` listening on a unix socket or a loopback port (0: the system picks). */
export async function startNbdkit(listen: Listen, args: string[]): Promise<Upstream> {
  let child: ChildProcess;
  if ('socket' in listen) {
    await fs.rm(listen.socket, { force: true });
    child = spawn('nbdkit', ['-f', '--exit-with-parent', '-U', listen.socket, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  } else {
    child = spawn('/usr/bin/python3', ['-c', LAUNCHER, String(listen.port), 'nbdkit', '-f', '--exit-with-parent', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  }
  const { stderr, exited } = track(child);
  let port: number | undefined;
  if ('port' in listen) {
    for (let i = 0; i < 400 && !/PORT=\d+/.test(stderr()); i++) await new Promise((r) => setTimeout(r, 25));
    const m = /PORT=(\d+)/.exec(stderr());
    if (!m) throw new Error(`the nbdkit launcher reported no port:\n${stderr()}`);
    port = Number(m[1]);
  }
  try {
    await connectable('socket' in listen ? { path: listen.socket } : { port: port! }, child, stderr);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return upstream(child, stderr, exited, 'socket' in listen ? listen.socket : undefined, port);
}

/** `qemu-nbd -r -t -f raw -x NAME -k SOCKET [extra] FILE`. */
export async function startQemuNbd(socket: string, file: string, exportName: string, extra: string[] = []): Promise<Upstream> {
  await fs.rm(socket, { force: true });
  const child = spawn('qemu-nbd', ['-r', '-t', '-f', 'raw', '-x', exportName, '-k', socket, ...extra, file], { stdio: ['ignore', 'pipe', 'pipe'] });
  const { stderr, exited } = track(child);
  try {
    await connectable({ path: socket }, child, stderr);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return upstream(child, stderr, exited, socket, undefined);
}

function upstream(child: ChildProcess, stderr: () => string, exited: Promise<void>, socket: string | undefined, port: number | undefined): Upstream {
  return {
    pid: child.pid!,
    child,
    socket,
    port,
    uri: (exportName = '', query = '') => {
      const name = encodeURIComponent(exportName);
      if (socket) return `nbd+unix:///${name}?socket=${socket}${query ? `&${query}` : ''}`;
      return `nbd://127.0.0.1:${port}/${name}${query ? `?${query}` : ''}`;
    },
    stderr,
    stop: stopper(child, exited),
  };
}
