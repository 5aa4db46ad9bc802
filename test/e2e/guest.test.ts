/**
 * The Linux guest end-to-end test (scripts/e2e-guest.sh): a Debian kernel booted under QEMU
 * (TCG) makes, fills, trims, remounts and verifies an ext4 filesystem on a stackbd export,
 * once through QEMU's own NBD client, on a stack whose base is read over http:// from an nginx
 * the script starts (URL + cache.asif + overlay.asif), and once through the guest kernel's nbd
 * module and nbd-client (base.raw + overlay.asif); the host then checks the base, the cache,
 * the overlay and the flattened image. The script installs its Debian packages when they are missing; anything it
 * cannot do fails this test with the script's output, it never skips.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../helpers/spawn-server.js';

const SCRIPT = path.join(PROJECT_ROOT, 'scripts/e2e-guest.sh');
// First run on a clean machine: apt-get install (a few minutes), then two TCG boots.
const TIMEOUT_MS = 25 * 60_000;

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  output: string;
}

function runScript(args: string[]): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [SCRIPT, ...args], {
      cwd: PROJECT_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      // SIGTERM: the script's trap stops QEMU and the server by their pids.
      timeout: TIMEOUT_MS - 60_000,
      killSignal: 'SIGTERM',
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, output }));
  });
}

function tail(text: string, lines: number): string {
  return text.split('\n').slice(-lines).join('\n');
}

describe('Linux guest end to end (scripts/e2e-guest.sh)', () => {
  it(
    'passes with QEMU’s NBD client and with the guest kernel’s nbd module',
    async () => {
      const result = await runScript([]);
      if (result.code !== 0) {
        throw new Error(
          `scripts/e2e-guest.sh failed (exit ${result.code}${result.signal ? `, signal ${result.signal}` : ''}); ` +
            `run "bash scripts/e2e-guest.sh --keep" to reproduce. Last output:\n${tail(result.output, 250)}`,
        );
      }
      // The timings (initramfs build, boot + guest test of each mode) for the test log.
      const timings = result.output.split('\n').filter((l) => /^e2e-guest: (timing: |\[\w+\] guest: )/.test(l));
      console.log(timings.join('\n'));
      expect(result.output).toMatch(/\[qemu\] guest: PASS mode=qemu/);
      // The qemu mode ran on an http base with a cache layer, which kept what the guest read.
      expect(result.output).toMatch(/\[qemu\] stack: http:\/\/127\.0\.0\.1:\d+\/base\.raw \(nginx, pid \d+\) \+ cache\.asif \+ overlay\.asif/);
      expect(result.output).toMatch(/^ {2}cache: [\d.]+ MiB data, [\d.]+ MiB zero chunks$/m);
      expect(result.output).toMatch(/\[qemu\] origin: \d+ range GETs while the guest ran/);
      expect(result.output).toMatch(/\[kernel\] guest: PASS mode=kernel/);
      expect(result.output).toMatch(/^e2e-guest: PASS \(modes: qemu kernel\)$/m);
    },
    TIMEOUT_MS,
  );
});
