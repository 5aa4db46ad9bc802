/**
 * Tests that drive real programs (qemu-img, nbdinfo, ...) call `requireTool` first: when the
 * program is missing the test fails with the command that installs it, it never skips.
 */
import { execFileSync } from 'node:child_process';

const PACKAGE_OF: Readonly<Record<string, string>> = {
  'qemu-img': 'qemu-utils',
  'qemu-io': 'qemu-utils',
  'qemu-nbd': 'qemu-utils',
  nbdinfo: 'libnbd-bin',
  nbdsh: 'libnbd-bin python3-libnbd',
  nbdcopy: 'libnbd-bin',
  nbdkit: 'nbdkit',
  fio: 'fio',
  '7zz': '7zip',
  dmg2img: 'dmg2img',
  xz: 'xz-utils',
  'python3-libnbd': 'python3-libnbd',
  'systemd-notify': 'systemd',
  'systemd-analyze': 'systemd',
};

/** Tools that are not a program on PATH: how to tell they are there. */
const CHECK_OF: Readonly<Record<string, readonly string[]>> = {
  // nbdsh and the Python scripts of the interop tier need Debian's python3 with the libnbd
  // bindings; another python3 earlier in PATH (pyenv) does not have them.
  'python3-libnbd': ['/usr/bin/python3', '-c', 'import nbd'],
};

export function requireTool(tool: string): void {
  const check = CHECK_OF[tool];
  try {
    if (check) execFileSync(check[0], check.slice(1), { stdio: 'ignore' });
    else execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
  } catch {
    const pkg = PACKAGE_OF[tool] ?? tool;
    throw new Error(`${tool} is not installed: run "bash scripts/install-test-deps.sh" (or apt-get install -y ${pkg})`);
  }
}
