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
};

export function requireTool(tool: string): void {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
  } catch {
    const pkg = PACKAGE_OF[tool] ?? tool;
    throw new Error(`${tool} is not installed: run "bash scripts/install-test-deps.sh" (or apt-get install -y ${pkg})`);
  }
}
