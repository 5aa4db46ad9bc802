/** systemd socket activation: the server takes an inherited listening socket (LISTEN_FDS/LISTEN_PID). */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inheritedListenFds } from '../../src/cli/socket-activation.js';
import { NbdClient } from '../../src/nbd/client.js';
import { STACKBD_BIN } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

describe('socket activation', () => {
  let dir: string;
  let disk: string;

  beforeAll(async () => {
    dir = await makeTempDir();
    disk = path.join(dir, 'disk.raw');
    await fs.writeFile(disk, Buffer.alloc(1 << 20, 9));
  });
  afterAll(() => removeDir(dir));

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
