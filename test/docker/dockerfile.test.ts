/**
 * No Docker engine runs here, so the Dockerfile is checked by doing what it says: the build
 * stage's COPY and RUN steps run in a clean temporary copy of the project, the runtime stage's
 * COPY --from=build steps assemble the final tree, and that tree serves and passes the
 * HEALTHCHECK command. compose.yaml's embedded config must be a valid stackbd config.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/server/config.js';
import { runCommand } from '../helpers/run-command.js';
import { PROJECT_ROOT } from '../helpers/spawn-server.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';
import { spawn } from 'node:child_process';

interface Instruction {
  op: string;
  args: string;
}

interface Stage {
  name: string;
  steps: Instruction[];
}

/** Splits a Dockerfile into stages of instructions (continuation lines joined, comments dropped). */
function parseDockerfile(text: string): Stage[] {
  const lines = text.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const stages: Stage[] = [];
  for (const line of lines) {
    const [, op, args] = /^(\S+)\s+(.*)$/.exec(line) ?? [];
    if (!op) continue;
    if (op.toUpperCase() === 'FROM') stages.push({ name: / AS (\S+)$/i.exec(args)?.[1] ?? String(stages.length), steps: [] });
    else stages[stages.length - 1].steps.push({ op: op.toUpperCase(), args });
  }
  return stages;
}

/** Copies build-context paths the way docker does: anything .dockerignore names stays out. */
async function copyInto(from: string, sources: string[], dest: string, ignored: readonly string[]): Promise<void> {
  const keep = (file: string): boolean => {
    const rel = path.relative(from, file);
    return !ignored.some((pattern) => rel === pattern || rel.startsWith(`${pattern}/`));
  };
  for (const source of sources) {
    const target = dest.endsWith('/') || sources.length > 1 ? path.join(dest, path.basename(source)) : dest;
    await fs.cp(path.join(from, source), target, { recursive: true, filter: keep });
  }
}

describe('docker/Dockerfile', () => {
  let dir: string;
  let stages: Stage[];

  beforeAll(async () => {
    dir = await makeTempDir('stackbd-docker-');
    stages = parseDockerfile(await fs.readFile(path.join(PROJECT_ROOT, 'docker/Dockerfile'), 'utf8'));
  });
  afterAll(() => removeDir(dir));

  it('has a build stage and a non-root runtime stage with a volume, port 10809 and a health check', () => {
    expect(stages.map((s) => s.name)).toEqual(['build', '1']);
    const runtime = stages[1].steps;
    expect(runtime.find((s) => s.op === 'USER')?.args).toBe('node');
    expect(runtime.find((s) => s.op === 'EXPOSE')?.args).toBe('10809');
    expect(runtime.find((s) => s.op === 'VOLUME')?.args).toBe('/images');
    expect(runtime.find((s) => s.op === 'HEALTHCHECK')?.args).toContain('probe');
  });

  it('builds in a clean copy of the project and the result serves and passes its health check', async () => {
    const buildDir = path.join(dir, 'build');
    const finalDir = path.join(dir, 'final');
    await fs.mkdir(buildDir);
    await fs.mkdir(finalDir);
    // The build stage, step by step, from the build context as docker would send it.
    const ignored = (await fs.readFile(path.join(PROJECT_ROOT, '.dockerignore'), 'utf8')).split('\n').filter((l) => l.trim() !== '');
    for (const step of stages[0].steps) {
      if (step.op === 'WORKDIR') continue;
      if (step.op === 'COPY') {
        const parts = step.args.split(/\s+/);
        await copyInto(PROJECT_ROOT, parts.slice(0, -1), path.join(buildDir, parts[parts.length - 1]), ignored);
      } else if (step.op === 'RUN') {
        const r = await runCommand('sh', ['-c', `cd "${buildDir}" && ${step.args}`], 300_000);
        expect(r.code, `RUN ${step.args}\n${r.stderr}`).toBe(0);
      } else {
        throw new Error(`the build stage has a step this check does not know: ${step.op}`);
      }
    }
    // The runtime stage takes only what it copies from the build stage.
    let health = '';
    for (const step of stages[1].steps) {
      if (step.op === 'COPY') {
        const parts = step.args.split(/\s+/);
        expect(parts[0]).toBe('--from=build');
        const [source, target] = parts.slice(1);
        const from = path.join(buildDir, source.replace(/^\/app\/?/, ''));
        const into = target === './' || target === '.' ? path.join(finalDir, path.basename(from)) : path.join(finalDir, target);
        await fs.cp(from, into, { recursive: true });
      }
      if (step.op === 'HEALTHCHECK') health = step.args;
    }
    expect(await fs.stat(path.join(finalDir, 'node_modules/vitest')).catch(() => null)).toBeNull();
    // The native fast paths were built by npm ci (the package's install script) and come along.
    expect((await fs.stat(path.join(finalDir, 'native/build/Release/stackbd_native.node'))).isFile()).toBe(true);
    const version = await runCommand(process.execPath, [path.join(finalDir, 'bin/stackbd.js'), '--version']);
    expect(version.code, version.stderr).toBe(0);

    const disk = path.join(dir, 'disk.raw');
    await fs.writeFile(disk, Buffer.alloc(1 << 20));
    const child = spawn(process.execPath, [path.join(finalDir, 'bin/stackbd.js'), 'serve', '--listen', '127.0.0.1:0', '--export', `vm=${disk}`], {
      stdio: ['ignore', 'ignore', 'pipe'],
      // The image runs with the addon, even in a run of the suite with STACKBD_NO_NATIVE=1.
      env: { ...process.env, STACKBD_NO_NATIVE: '0' },
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      for (let i = 0; i < 200 && !stderr.includes('"listening"'); i++) await new Promise((r) => setTimeout(r, 50));
      const port = Number(/"port":(\d+)/.exec(stderr)?.[1]);
      expect(port, stderr).toBeGreaterThan(0);
      // The HEALTHCHECK command, pointed at this server's port.
      const cmd = JSON.parse(/CMD (\[.*\])/.exec(health)![1]) as string[];
      const args = cmd.slice(1).map((a) => a.replace('/app/', `${finalDir}/`).replace(':10809', `:${port}`));
      const probe = await runCommand(process.execPath, args);
      expect(probe.code, probe.stderr).toBe(0);
      expect(probe.stdout).toContain('"name":"vm"');
      expect(stderr, 'the server in the image loads the native fast paths').not.toContain('native fast paths not loaded');
    } finally {
      process.kill(child.pid!, 'SIGTERM');
      expect(await exited).toBe(0);
    }
  });

  it('compose.yaml builds this Dockerfile and embeds a valid stackbd config', async () => {
    const compose = await fs.readFile(path.join(PROJECT_ROOT, 'docker/compose.yaml'), 'utf8');
    expect(compose).toContain('dockerfile: docker/Dockerfile');
    const block = /content: \|\n((?: {6}.*\n?)+)/.exec(compose);
    expect(block, 'compose.yaml has an inline config').not.toBeNull();
    const config = parseConfig(block![1].replace(/^ {6}/gm, ''), '/images/stackbd.json');
    expect(config.exports.map((e) => e.layers)).toEqual([['/images/base.raw', '/images/vm1.asif']]);
  });
});
