/**
 * systemd: the server takes an inherited listening socket (LISTEN_FDS/LISTEN_PID), leaves the
 * config file's listeners to the socket unit, and tells a NOTIFY_SOCKET READY=1 once it serves
 * and STOPPING=1 when it stops (through the native addon, or systemd-notify without it). The
 * example units in systemd/ pass `systemd-analyze verify` and agree with the example config.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminRequest } from '../../src/cli/admin-client.js';
import { inheritedListenFds, planListeners } from '../../src/cli/socket-activation.js';
import { NbdClient } from '../../src/nbd/client.js';
import { parseConfig } from '../../src/server/config.js';
import { requireTool } from '../helpers/require-tool.js';
import { runCommand, runStackbd } from '../helpers/run-command.js';
import { PROJECT_ROOT, STACKBD_BIN } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const SYSTEMD_DIR = path.join(PROJECT_ROOT, 'systemd');
const FAKE_NOTIFY = path.join(PROJECT_ROOT, 'test/helpers/fake-notify-socket.py');

interface Notification {
  message: string;
  fds: number;
}

/** test/helpers/fake-notify-socket.py on `socketPath`: what systemd would receive. */
async function startFakeNotifySocket(socketPath: string): Promise<{ messages: Notification[]; waitFor(prefix: string): Promise<void>; stop(): Promise<void> }> {
  const child = spawn('/usr/bin/python3', [FAKE_NOTIFY, socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  const messages: Notification[] = [];
  let buffered = '';
  const waiters: Array<() => void> = [];
  let bound!: () => void;
  const isBound = new Promise<void>((resolve) => (bound = resolve));
  child.stdout.on('data', (d: Buffer) => {
    buffered += d.toString();
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line === 'BOUND') bound();
      else messages.push(JSON.parse(line) as Notification);
      for (const wake of waiters.splice(0)) wake();
    }
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await Promise.race([isBound, exited.then(() => Promise.reject(new Error('the fake NOTIFY_SOCKET did not start')))]);
  return {
    messages,
    async waitFor(prefix) {
      while (!messages.some((m) => m.message.startsWith(prefix))) await new Promise<void>((resolve) => waiters.push(resolve));
    },
    async stop() {
      process.kill(child.pid!, 'SIGTERM');
      await exited;
    },
  };
}

/**
 * What systemd does for a socket unit: bind and listen, then (once the test has written the
 * config that names the same address, and says go on stdin) put the socket at fd 3, set
 * LISTEN_FDS and LISTEN_PID and exec the service (exec keeps the pid).
 */
const LAUNCHER = [
  'import os, socket, sys',
  's = socket.socket()',
  "s.bind(('127.0.0.1', 0))",
  's.listen(16)',
  "sys.stderr.write('PORT=%d\\n' % s.getsockname()[1]); sys.stderr.flush()",
  'sys.stdin.readline()',
  'os.dup2(s.fileno(), 3); os.set_inheritable(3, True)',
  "os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid())",
  'os.execv(sys.argv[1], sys.argv[1:])',
].join('\n');

/** The service unit's ExecStart= arguments after the program. */
async function unitServeArgs(): Promise<string[]> {
  const unit = await fs.readFile(path.join(SYSTEMD_DIR, 'stackbd.service'), 'utf8');
  const line = /^ExecStart=(\S+) (.*)$/m.exec(unit);
  if (!line) throw new Error('stackbd.service has no ExecStart=');
  return line[2].split(/\s+/);
}

describe('socket activation', () => {
  let dir: string;
  let disk: string;

  beforeAll(async () => {
    dir = await makeTempDir();
    disk = path.join(dir, 'disk.raw');
    await fs.writeFile(disk, Buffer.alloc(1 << 20, 9));
  });
  afterAll(() => removeDir(dir));

  it('leaves the config file\'s listeners to the socket unit, and binds the command line\'s', () => {
    const config = { listen: ['127.0.0.1:10809'], socket: ['/run/a.sock'] };
    expect(planListeners(1, config, {})).toEqual({ tcp: [], sockets: [], skipped: ['127.0.0.1:10809', '/run/a.sock'] });
    expect(planListeners(2, config, { listen: ['[::1]:1'], socket: ['/b'] })).toEqual({ tcp: ['[::1]:1'], sockets: ['/b'], skipped: ['127.0.0.1:10809', '/run/a.sock'] });
    expect(planListeners(0, config, { listen: ['[::1]:1'] })).toEqual({ tcp: ['127.0.0.1:10809', '[::1]:1'], sockets: ['/run/a.sock'], skipped: [] });
    expect(planListeners(0, null, {})).toEqual({ tcp: ['127.0.0.1:10809'], sockets: [], skipped: [] });
    expect(planListeners(0, null, { socket: ['/b'] })).toEqual({ tcp: [], sockets: ['/b'], skipped: [] });
  });

  it('reads LISTEN_FDS only when LISTEN_PID is this process', () => {
    expect(inheritedListenFds({ LISTEN_FDS: '2', LISTEN_PID: '42' }, 42)).toEqual([3, 4]);
    expect(inheritedListenFds({ LISTEN_FDS: '1', LISTEN_PID: '41' }, 42)).toEqual([]);
    expect(inheritedListenFds({}, 42)).toEqual([]);
    expect(inheritedListenFds({ LISTEN_FDS: 'x' }, 42)).toEqual([]);
  });

  it('serves on a listening socket it inherited as fd 3', async () => {
    // What systemd does: bind and listen, put the socket at fd 3, set LISTEN_FDS and
    // LISTEN_PID, and exec the service (exec keeps the pid).
    const launcher = [
      'import os, socket, sys',
      's = socket.socket()',
      "s.bind(('127.0.0.1', 0))",
      's.listen(16)',
      "sys.stderr.write('PORT=%d\\n' % s.getsockname()[1]); sys.stderr.flush()",
      'os.dup2(s.fileno(), 3); os.set_inheritable(3, True)',
      "os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid())",
      'os.execv(sys.argv[1], sys.argv[1:])',
    ].join('\n');
    const child = spawn('/usr/bin/python3', ['-c', launcher, process.execPath, STACKBD_BIN, 'serve', '--export', `d=${disk}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      for (let i = 0; i < 200 && !stderr.includes('"listening"'); i++) await new Promise((r) => setTimeout(r, 50));
      expect(stderr).toContain('"fd":3');
      const port = Number(/PORT=(\d+)/.exec(stderr)![1]);
      const client = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port }, { exportName: 'd' });
      expect((await client.pread(0, 16)).equals(Buffer.alloc(16, 9))).toBe(true);
      await client.disconnect();
    } finally {
      process.kill(child.pid!, 'SIGTERM');
      expect(await exited).toBe(0);
    }
    // It did not also open the default TCP port.
    expect(stderr).not.toContain('10809');
  });
});

describe('the systemd example (systemd/stackbd.socket, stackbd.service, stackbd.json)', () => {
  let dir: string;
  let baseData: Buffer;

  beforeAll(async () => {
    dir = await makeTempDir('stackbd-systemd-');
    baseData = randomBytes(1 << 20);
  });
  afterAll(() => removeDir(dir));

  const modes = [
    // '0': the addon even in a run of the suite with STACKBD_NO_NATIVE=1.
    { name: 'native addon', env: { STACKBD_NO_NATIVE: '0' }, barrier: false },
    { name: 'systemd-notify, no native addon', env: { STACKBD_NO_NATIVE: '1' }, barrier: true },
  ];
  for (const [i, mode] of modes.entries()) {
    it(`serves the example config on the socket it inherits, the config's own listener on the same address included, and sends READY=1 then STOPPING=1 (${mode.name})`, async () => {
      if (mode.barrier) requireTool('systemd-notify');
      const run = path.join(dir, `run${i}`);
      await fs.mkdir(path.join(run, 'images'), { recursive: true });
      // The example config, its images moved into the temp dir; plus the listeners the README's
      // config lists, which the socket unit already holds.
      const example = JSON.parse(await fs.readFile(path.join(SYSTEMD_DIR, 'stackbd.json'), 'utf8')) as { exports: Array<{ name: string; layers: string[] }> };
      const layers = example.exports[0].layers.map((l) => path.join(run, 'images', path.basename(l)));
      await fs.writeFile(layers[0], baseData);
      const made = await runStackbd(['append', layers[0], '--new', layers[1]]);
      expect(made.code, made.stderr).toBe(0);
      const configFile = path.join(run, 'stackbd.json');
      const adminSocket = path.join(run, 'admin.sock');
      const configSocket = path.join(run, 'config.sock');
      const args = (await unitServeArgs()).map((a) => (a === '/etc/stackbd/stackbd.json' ? configFile : a === '/run/stackbd/admin.sock' ? adminSocket : a));
      expect(args).toContain(configFile);
      expect(args).toContain(adminSocket);

      const notify = await startFakeNotifySocket(path.join(run, 'notify.sock'));
      const child: ChildProcess = spawn('/usr/bin/python3', ['-c', LAUNCHER, process.execPath, STACKBD_BIN, ...args, '--log-level', 'info'], {
        stdio: ['pipe', 'ignore', 'pipe'],
        env: { ...process.env, ...mode.env, NOTIFY_SOCKET: path.join(run, 'notify.sock') },
      });
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      try {
        while (!/PORT=\d+/.test(stderr)) await new Promise((r) => setTimeout(r, 20));
        const port = Number(/PORT=(\d+)/.exec(stderr)![1]);
        const config = { ...example, exports: [{ ...example.exports[0], layers }], listen: [`127.0.0.1:${port}`], socket: [configSocket] };
        await fs.writeFile(configFile, JSON.stringify(config));
        child.stdin!.end('go\n');

        // READY=1 means serving: the admin socket and the inherited socket answer at once.
        await Promise.race([notify.waitFor('READY=1'), exited.then((code) => Promise.reject(new Error(`stackbd exited with ${code} before READY=1:\n${stderr}`)))]);
        const health = await adminRequest({ socketPath: adminSocket }, 'GET', '/health');
        expect(health.status, health.body).toBe(200);
        const client = await NbdClient.connect({ kind: 'tcp', host: '127.0.0.1', port }, { exportName: 'vm1' });
        expect((await client.pread(0, 4096)).equals(baseData.subarray(0, 4096))).toBe(true);
        await client.disconnect();
        expect(stderr).not.toContain('EADDRINUSE');
        expect(stderr).toContain('left to the socket unit');
        expect(await fs.stat(configSocket).catch(() => null), 'the config\'s unix socket is not bound under socket activation').toBeNull();
      } finally {
        if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGTERM');
        const code = await exited;
        await notify.stop();
        expect(code, stderr).toBe(0);
      }
      const sent = notify.messages.filter((m) => m.message !== 'BARRIER=1');
      expect(sent.map((m) => m.message.split('\n')[0])).toEqual(['READY=1', 'STOPPING=1']);
      expect(sent[0].message).toContain('STATUS=serving 1 export(s)');
      // systemd-notify waits on a barrier; the addon sends from the server itself.
      expect(notify.messages.some((m) => m.message === 'BARRIER=1' && m.fds === 1)).toBe(mode.barrier);
    });
  }

  it('has units that pass systemd-analyze verify and agree with the example config on paths', async () => {
    requireTool('systemd-analyze');
    const service = await fs.readFile(path.join(SYSTEMD_DIR, 'stackbd.service'), 'utf8');
    const program = /^ExecStart=(\S+)/m.exec(service)![1];
    // An alternate root with the system's units, ours, and a stand-in for the installed command.
    const root = path.join(dir, 'root');
    await fs.cp('/usr/lib/systemd/system', path.join(root, 'usr/lib/systemd/system'), { recursive: true });
    await fs.mkdir(path.join(root, 'etc/systemd/system'), { recursive: true });
    for (const unit of ['stackbd.socket', 'stackbd.service']) await fs.copyFile(path.join(SYSTEMD_DIR, unit), path.join(root, 'etc/systemd/system', unit));
    await fs.mkdir(path.join(root, path.dirname(program)), { recursive: true });
    await fs.writeFile(path.join(root, program), '#!/bin/sh\n', { mode: 0o755 });
    const verify = await runCommand('systemd-analyze', ['verify', `--root=${root}`, 'stackbd.socket', 'stackbd.service']);
    expect(verify.code, verify.stderr).toBe(0);
    expect(verify.stderr.trim(), 'systemd-analyze verify warns').toBe('');

    expect(service).toMatch(/^Type=notify$/m);
    expect(service).toMatch(/^NotifyAccess=all$/m);
    expect(service).toMatch(/^User=stackbd$/m);
    const args = await unitServeArgs();
    const configPath = args[args.indexOf('--config') + 1];
    const adminPath = args[args.indexOf('--admin-socket') + 1];
    const dirOf = (key: string, base: string): string => path.join(base, new RegExp(`^${key}=(.+)$`, 'm').exec(service)?.[1] ?? `(no ${key}=)`);
    expect(path.dirname(configPath)).toBe(dirOf('ConfigurationDirectory', '/etc'));
    expect(path.dirname(adminPath)).toBe(dirOf('RuntimeDirectory', '/run'));
    const example = parseConfig(await fs.readFile(path.join(SYSTEMD_DIR, 'stackbd.json'), 'utf8'), configPath);
    const state = dirOf('StateDirectory', '/var/lib');
    for (const layer of example.exports.flatMap((e) => e.layers)) expect(layer.startsWith(`${state}/`), `${layer} is under ${state}, the only place the service may write`).toBe(true);
    expect(example.listen, 'the listeners come from stackbd.socket').toEqual([]);
  });
});
