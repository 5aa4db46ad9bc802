/**
 * Shared harness of the interop tier: reference images with known content, sha256 of files and
 * of whole exports, running a real program with a timeout and capturing its output, starting
 * stackbd (through spawnServer) and qemu-nbd (the reference server) on 127.0.0.1 or a unix
 * socket, and a seeded random generator so a failing run can be replayed.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import { NbdClient } from '../../src/nbd/client.js';
import { spawnServer, type SpawnedServer } from '../helpers/spawn-server.js';

// ---------------------------------------------------------------------------------------------
// Seeded random numbers

/** xoshiro128** with a splitmix32 seed expansion: fast, 32-bit, reproducible from one seed. */
export class Prng {
  private s = new Uint32Array(4);

  constructor(readonly seed: number) {
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
    if (this.s.every((v) => v === 0)) this.s[0] = 1;
  }

  u32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** An integer in [0, n), n ≤ 2^53. */
  int(n: number): number {
    if (n <= 0x1_0000_0000) return Math.floor((this.u32() / 0x1_0000_0000) * n);
    return Math.floor(((this.u32() * 0x1_0000_0000 + this.u32()) / 2 ** 64) * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  bytes(n: number): Buffer {
    const buf = Buffer.allocUnsafe(n);
    let i = 0;
    for (; i + 4 <= n; i += 4) buf.writeUInt32LE(this.u32(), i);
    if (i < n) {
      const last = this.u32();
      for (let k = 0; i < n; i++, k++) buf[i] = (last >>> (8 * k)) & 0xff;
    }
    return buf;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** A seed from the environment variable `name` if set (to replay a failure), else a fresh one. */
export function seedFrom(name: string): number {
  const given = process.env[name];
  if (given !== undefined && given !== '') {
    const n = Number(given);
    if (!Number.isInteger(n) || n < 0) throw new Error(`${name}=${given} is not a non-negative integer`);
    return n >>> 0;
  }
  return Math.floor(Math.random() * 0x1_0000_0000) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Reference images with known content

export interface DataRegion {
  offset: number;
  length: number;
  /** The region's bytes are `new Prng(seed).bytes(length)`. */
  seed: number;
}

/** The content of a disk: zeros everywhere but in the regions (sorted, not overlapping). */
export interface ImageLayout {
  size: number;
  regions: DataRegion[];
}

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

export function regionBytes(region: DataRegion): Buffer {
  return new Prng(region.seed).bytes(region.length);
}

/** Writes the layout as a sparse RAW file (holes where the layout has zeros). */
export async function writeRawImage(file: string, layout: ImageLayout): Promise<void> {
  const handle = await fs.open(file, 'wx');
  try {
    await handle.truncate(layout.size);
    for (const region of layout.regions) {
      const data = regionBytes(region);
      let done = 0;
      while (done < data.length) {
        const { bytesWritten } = await handle.write(data, done, data.length - done, region.offset + done);
        done += bytesWritten;
      }
    }
  } finally {
    await handle.close();
  }
}

/** The block size of the file system holding `dir`: the unit in which a sparse file is data or
 * a hole (SEEK_DATA/SEEK_HOLE, fallocate PUNCH_HOLE); ext4: 4 KiB. */
export async function fileSystemBlockSize(dir: string): Promise<number> {
  const { bsize } = await fs.statfs(dir);
  if (!Number.isInteger(bsize) || bsize < 512 || bsize % 512 !== 0) throw new Error(`${dir}: unexpected file system block size ${bsize}`);
  return bsize;
}

/** The whole content of a (small) layout in memory. */
export function layoutBuffer(layout: ImageLayout): Buffer {
  const buf = Buffer.alloc(layout.size);
  for (const region of layout.regions) regionBytes(region).copy(buf, region.offset);
  return buf;
}

/** A layout of `size` bytes with `count` random regions of `minLength`..`maxLength` bytes, some
 * unaligned, none overlapping, at offsets picked by `rng`. */
export function randomLayout(rng: Prng, size: number, count: number, minLength: number, maxLength: number): ImageLayout {
  const slot = Math.floor(size / count);
  const regions: DataRegion[] = [];
  for (let i = 0; i < count; i++) {
    const length = Math.min(slot, rng.range(minLength, maxLength));
    const aligned = rng.chance(0.5);
    let offset = i * slot + rng.int(slot - length + 1);
    if (aligned) offset = Math.max(i * slot, offset - (offset % 4096));
    regions.push({ offset, length, seed: rng.u32() });
  }
  return { size, regions };
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 * MiB })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Hashes a file reading only its data extents (SEEK_DATA / SEEK_HOLE) and feeding zeros for
 * the holes: the same sha256 as sha256File, without reading 1 GiB of holes from the disk (which
 * takes seconds here). Node has no SEEK_DATA, so Debian's python3 does the seeking. */
const SPARSE_SHA256_PY = `
import errno, hashlib, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
h = hashlib.sha256()
zeros = bytes(4 << 20)
def feed_zeros(n):
    while n > 0:
        k = min(n, len(zeros)); h.update(zeros[:k]); n -= k
pos = 0
while pos < size:
    try:
        data = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError as e:
        if e.errno != errno.ENXIO: raise
        data = size
    feed_zeros(data - pos)
    if data >= size: break
    hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
    while data < hole:
        chunk = os.pread(fd, min(4 << 20, hole - data), data)
        if not chunk: raise SystemExit("short read at %d" % data)
        h.update(chunk); data += len(chunk)
    pos = hole
print(h.hexdigest())
`;

export async function sha256SparseFile(file: string): Promise<string> {
  const r = await run(DEBIAN_PYTHON, ['-c', SPARSE_SHA256_PY, file], { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`sparse sha256 failed:\n${describeRun(r)}`);
  return r.stdout.trim();
}

/** sha256 of a layout's content without building it in memory (zeros streamed in pieces). */
export function sha256Layout(layout: ImageLayout): string {
  const hash = createHash('sha256');
  const zeros = Buffer.alloc(4 * MiB);
  let at = 0;
  const zerosUpTo = (end: number): void => {
    while (at < end) {
      const n = Math.min(zeros.length, end - at);
      hash.update(zeros.subarray(0, n));
      at += n;
    }
  };
  for (const region of layout.regions) {
    zerosUpTo(region.offset);
    hash.update(regionBytes(region));
    at += region.length;
  }
  zerosUpTo(layout.size);
  return hash.digest('hex');
}

export type TcpTarget = { kind: 'tcp'; host: string; port: number };
export type UnixTarget = { kind: 'unix'; path: string };
export type Target = TcpTarget | UnixTarget;

/** Reads a whole export through our client (several reads in flight) and hashes it. */
export async function sha256Export(target: Target, exportName: string, piece = 4 * MiB, depth = 8): Promise<{ size: number; sha256: string }> {
  const client = await NbdClient.connect(target, { exportName });
  try {
    const size = client.size;
    const hash = createHash('sha256');
    const inFlight: Array<Promise<Buffer>> = [];
    let next = 0;
    const issue = (): void => {
      const length = Math.min(piece, size - next);
      inFlight.push(client.pread(next, length));
      next += length;
    };
    while (next < size && inFlight.length < depth) issue();
    while (inFlight.length > 0) {
      hash.update(await inFlight.shift()!);
      if (next < size) issue();
    }
    return { size, sha256: hash.digest('hex') };
  } finally {
    await client.disconnect();
  }
}

// ---------------------------------------------------------------------------------------------
// Running programs

export interface RunResult {
  command: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  durationMs: number;
  timedOut: boolean;
}

export interface RunOptions {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  input?: string;
}

/** Runs a program (argument array, no shell) to its end; never rejects for a non-zero exit. */
export function run(program: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const started = Date.now();
  const command = [program, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, {
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      env: options.env ?? process.env,
      cwd: options.cwd,
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    if (options.input !== undefined) child.stdin!.end(options.input);
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    }, options.timeoutMs ?? 60_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${command}: ${err.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ command, code, signal, stdout, stderr, durationMs: Date.now() - started, timedOut });
    });
  });
}

/** Everything about a run, for assertion messages. */
export function describeRun(r: RunResult): string {
  const status = r.timedOut ? 'TIMED OUT' : r.signal ? `signal ${r.signal}` : `exit ${r.code}`;
  return `$ ${r.command}\n(${status}, ${r.durationMs} ms)\n--- stdout ---\n${tail(r.stdout)}\n--- stderr ---\n${tail(r.stderr)}`;
}

function tail(text: string, max = 6000): string {
  return text.length > max ? `[... ${text.length - max} bytes cut ...]\n${text.slice(-max)}` : text;
}

/** The environment for Debian's libnbd Python tools (nbdsh is `python3 -m nbd`): /usr/bin first
 * so another python3 earlier in PATH (pyenv) is not picked. */
export function debianPythonEnv(): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `/usr/bin:/bin:${process.env.PATH ?? ''}`, PYTHONDONTWRITEBYTECODE: '1' };
}

export const DEBIAN_PYTHON = '/usr/bin/python3';

// ---------------------------------------------------------------------------------------------
// Servers

export interface StackbdExport {
  name: string;
  /** Image files, bottom first. */
  paths: string[];
}

export interface StackbdOptions {
  exports: StackbdExport[];
  readOnly?: boolean;
  /** Also listen on this unix socket. */
  socket?: string;
  logLevel?: string;
}

export interface Stackbd extends SpawnedServer {
  tcp: TcpTarget;
  unixUri(exportName: string, socket?: string): string;
}

/** Starts the real CLI (`stackbd serve`) on 127.0.0.1 with a port of its own choosing. */
export async function startStackbd(options: StackbdOptions): Promise<Stackbd> {
  const args: string[] = [];
  // The default export "" is given the documented way, as a bare PATH.
  for (const e of options.exports) args.push('--export', e.name === '' ? e.paths.join(',') : `${e.name}=${e.paths.join(',')}`);
  if (options.readOnly) args.push('--read-only');
  const server = await spawnServer({ args, socket: options.socket, logLevel: options.logLevel });
  return Object.assign(server, {
    tcp: { kind: 'tcp' as const, host: server.host, port: server.port },
    unixUri: (exportName: string, socket = options.socket) => {
      if (!socket) throw new Error('this server has no unix socket');
      return `nbd+unix:///${encodeURIComponent(exportName)}?socket=${socket}`;
    },
  });
}

/** Parses the JSON log lines a server wrote to stderr (lines that are not JSON are skipped). */
export function logEntries(logs: string): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of logs.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      continue;
    }
  }
  return out;
}

/** A TCP port on 127.0.0.1 that was free a moment ago (for servers that cannot take port 0). */
export function pickFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      probe.close(() => (port ? resolve(port) : reject(new Error('no port'))));
    });
  });
}

/** Resolves when something that greets like an NBD server answers at the target. */
async function nbdGreets(target: Target): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = target.kind === 'tcp' ? net.connect({ host: target.host, port: target.port }) : net.connect(target.path);
    let got = Buffer.alloc(0);
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(2000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= 8) done(got.subarray(0, 8).toString('latin1') === 'NBDMAGIC');
    });
    socket.on('end', () => done(false));
  });
}

export interface QemuNbd {
  pid: number;
  target: Target;
  exportName: string;
  uri(): string;
  stderr(): string;
  /** SIGTERM by its own pid, then waits; resolves with the exit code. */
  stop(): Promise<number | null>;
}

export interface QemuNbdOptions {
  file: string;
  format?: string;
  exportName?: string;
  /** Listen on this unix socket instead of a TCP port on 127.0.0.1. */
  socket?: string;
  /** Extra options, e.g. ['--discard=unmap', '--cache=none']. */
  extraArgs?: string[];
  timeoutMs?: number;
}

/** Starts `qemu-nbd -t` (persistent) serving one file, on 127.0.0.1:PORT (a free port, retried
 * when another process took it first) or on a unix socket. */
export async function startQemuNbd(options: QemuNbdOptions): Promise<QemuNbd> {
  const attempts = options.socket ? 1 : 5;
  let lastError: Error | null = null;
  for (let attempt = 0; attempt < attempts; attempt++) {
    const exportName = options.exportName ?? '';
    const target: Target = options.socket ? { kind: 'unix', path: options.socket } : { kind: 'tcp', host: '127.0.0.1', port: await pickFreePort() };
    const listenArgs = target.kind === 'unix' ? ['-k', target.path] : ['-b', '127.0.0.1', '-p', String(target.port)];
    const args = ['-t', ...listenArgs, '-x', exportName, '-f', options.format ?? 'raw', ...(options.extraArgs ?? []), options.file];
    const child = spawn('qemu-nbd', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let exitCode: number | null | undefined;
    void exited.then((code) => (exitCode = code));
    const pid = child.pid;
    if (pid === undefined) throw new Error('qemu-nbd did not start (is qemu-utils installed?)');
    const deadline = Date.now() + (options.timeoutMs ?? 10_000);
    let ready = false;
    while (Date.now() < deadline && exitCode === undefined) {
      if (await nbdGreets(target)) {
        ready = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (ready) {
      const uri = (): string =>
        target.kind === 'tcp'
          ? `nbd://127.0.0.1:${target.port}/${encodeURIComponent(exportName)}`
          : `nbd+unix:///${encodeURIComponent(exportName)}?socket=${target.path}`;
      return {
        pid,
        target,
        exportName,
        uri,
        stderr: () => stderr,
        stop: async () => {
          if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
          process.kill(pid, 'SIGTERM');
          const timer = setTimeout(() => process.kill(pid, 'SIGKILL'), 10_000);
          const code = await exited;
          clearTimeout(timer);
          return code;
        },
      };
    }
    if (exitCode === undefined) {
      process.kill(pid, 'SIGKILL');
      await exited;
    }
    lastError = new Error(`qemu-nbd ${args.join(' ')} did not start serving (exit ${exitCode}); stderr:\n${stderr}`);
    // Another process may have taken the port between picking and binding: try another one.
    if (!/address already in use/i.test(stderr)) break;
  }
  throw lastError ?? new Error('qemu-nbd did not start');
}

// ---------------------------------------------------------------------------------------------
// Client output parsers

export interface MapEntry {
  offset: number;
  length: number;
  type: number;
  description: string;
}

/** `nbdinfo --map --json` output. */
export function parseNbdinfoMapJson(stdout: string): MapEntry[] {
  return JSON.parse(stdout) as MapEntry[];
}

/** `nbdinfo --map` text output: "offset length type description" per line. */
export function parseNbdinfoMapText(stdout: string): MapEntry[] {
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .map((l) => {
      const m = /^(\d+)\s+(\d+)\s+(\d+)\s+(.*)$/.exec(l);
      if (!m) throw new Error(`unexpected nbdinfo --map line: ${l}`);
      return { offset: Number(m[1]), length: Number(m[2]), type: Number(m[3]), description: m[4] };
    });
}

// ---------------------------------------------------------------------------------------------
// A model of a disk's content, with ranges whose content is undefined (after a TRIM where it is
// only a hint, e.g. the whole chunks of an ASIF top layer, released or not: a server may keep
// the bytes, zero them, or anything, until they are rewritten; a RAW export zeroes them exactly)

export class DiskModel {
  readonly data: Buffer;
  /** Sorted, disjoint, non-adjacent [start, end) ranges whose content is undefined. */
  private undefinedRanges: Array<[number, number]> = [];

  constructor(initial: Buffer) {
    this.data = Buffer.from(initial);
  }

  get size(): number {
    return this.data.length;
  }

  write(offset: number, buf: Buffer): void {
    buf.copy(this.data, offset);
    this.define(offset, offset + buf.length);
  }

  fill(offset: number, length: number, byte: number): void {
    this.data.fill(byte, offset, offset + length);
    this.define(offset, offset + length);
  }

  zero(offset: number, length: number): void {
    this.fill(offset, length, 0);
  }

  /** The range's content becomes undefined until written again. */
  trim(offset: number, length: number): void {
    if (length <= 0) return;
    const start = offset;
    const end = offset + length;
    const out: Array<[number, number]> = [];
    let s = start;
    let e = end;
    for (const [a, b] of this.undefinedRanges) {
      if (b < s || a > e) out.push([a, b]);
      else {
        s = Math.min(s, a);
        e = Math.max(e, b);
      }
    }
    out.push([s, e]);
    out.sort((x, y) => x[0] - y[0]);
    this.undefinedRanges = out;
  }

  private define(start: number, end: number): void {
    if (end <= start || this.undefinedRanges.length === 0) return;
    const out: Array<[number, number]> = [];
    for (const [a, b] of this.undefinedRanges) {
      if (b <= start || a >= end) out.push([a, b]);
      else {
        if (a < start) out.push([a, start]);
        if (b > end) out.push([end, b]);
      }
    }
    this.undefinedRanges = out;
  }

  /** The undefined ranges that meet [offset, offset + length), clipped to it. */
  undefinedIn(offset: number, length: number): Array<[number, number]> {
    const end = offset + length;
    const out: Array<[number, number]> = [];
    for (const [a, b] of this.undefinedRanges) {
      if (b <= offset || a >= end) continue;
      out.push([Math.max(a, offset), Math.min(b, end)]);
    }
    return out;
  }

  /** The defined sub-ranges of [offset, offset + length). */
  definedIn(offset: number, length: number): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    let at = offset;
    for (const [a, b] of this.undefinedIn(offset, length)) {
      if (a > at) out.push([at, a]);
      at = b;
    }
    if (at < offset + length) out.push([at, offset + length]);
    return out;
  }

  get undefinedBytes(): number {
    return this.undefinedRanges.reduce((n, [a, b]) => n + b - a, 0);
  }

  /** The first defined byte where `got` (read at `offset`) differs from the model, or -1. */
  firstMismatch(offset: number, got: Buffer): number {
    for (const [a, b] of this.definedIn(offset, got.length)) {
      const mine = this.data.subarray(a, b);
      const theirs = got.subarray(a - offset, b - offset);
      if (!mine.equals(theirs)) {
        for (let i = 0; i < mine.length; i++) if (mine[i] !== theirs[i]) return a + i;
      }
    }
    return -1;
  }

  /** A few bytes around `at` from the model and from `got` (read at `offset`), for messages. */
  describeMismatch(offset: number, got: Buffer, at: number): string {
    const from = Math.max(offset, at - 4);
    const to = Math.min(offset + got.length, at + 12);
    const model = this.data.subarray(from, to).toString('hex');
    const seen = got.subarray(from - offset, to - offset).toString('hex');
    return `first difference at offset ${at} (read ${offset}+${got.length}); bytes ${from}..${to}: model ${model}, got ${seen}`;
  }
}
