/**
 * Drives an ASIF image and the reference model side by side (model-based tests): abstract
 * operations are resolved against the image's geometry and current size, run on both, and
 * every read is compared. `verify` compares hot windows byte for byte and the whole map.
 */
import { expect } from 'vitest';
import { RequestError } from '../../../src/block/errors.js';
import type { Run } from '../../../src/block/runs.js';
import { checkAsif, checkAsifFile, createAsif, createAsifFile, openAsif, openAsifFile, type AsifImage } from '../../../src/formats/asif/index.js';
import type { LayerType } from '../../../src/formats/layer.js';
import { DiskModel, patternBytes } from './disk-model.js';
import { MemFile, seededRandom } from './mem-file.js';
import { PaddedImage } from './padded.js';

export interface HarnessConfig {
  readonly name: string;
  readonly blockSize: 512 | 4096;
  readonly chunkSize?: number;
  readonly maxSectorCount?: number;
  /** Virtual size in bytes (a multiple of the block size). */
  readonly size: number;
  readonly backend: 'mem' | 'fd';
}

export interface Pos {
  window: number;
  frac: number;
  align: 'byte' | 'sector' | 'chunk';
}
export interface Len {
  unit: 'bytes' | 'sectors' | 'chunks';
  n: number;
  extra: number;
}
export type Op =
  | { kind: 'write'; at: Pos; len: Len; seed: number; fua: boolean }
  | { kind: 'zero'; at: Pos; len: Len; noHole: boolean; fast: boolean; fua: boolean }
  | { kind: 'discard'; at: Pos; len: Len; fua: boolean }
  | { kind: 'read'; at: Pos; len: Len }
  | { kind: 'flush' }
  | { kind: 'reopen'; peekReadOnly: boolean }
  | { kind: 'truncate'; to: 'shrinkPartial' | 'shrinkChunks' | 'grow' | 'original' }
  | { kind: 'batch'; ops: Op[] }
  /** Small writes and zeroes packed back to back from one point, all at once: they share sectors and chunks. */
  | { kind: 'cluster'; at: Pos; pieces: ClusterPiece[] };

export interface ClusterPiece {
  gap: number;
  length: number;
  zero: boolean;
  seed: number;
}

export interface CaseOptions {
  layerType: LayerType | null;
  cacheBytes: number | undefined;
  jitterSeed: number;
}

type IoOp = Extract<Op, { len: Len }>;

export class AsifHarness {
  private current!: AsifImage;
  /** Writes of any byte range, padded and ordered as the server does (padded.ts). */
  private io!: PaddedImage;
  readonly model: DiskModel;
  private readonly mem: MemFile | null;
  private readonly path: string;
  readonly windows: Array<[number, number]>;
  private readonly chunkSize: number;

  get image(): AsifImage {
    return this.current;
  }

  set image(image: AsifImage) {
    this.current = image;
    this.io = new PaddedImage(image);
  }

  private constructor(
    readonly config: HarnessConfig,
    private readonly options: CaseOptions,
    path: string,
  ) {
    const C = config.chunkSize ?? 1024 * 1024;
    this.chunkSize = C;
    this.path = path;
    this.mem = config.backend === 'mem' ? new MemFile(path, new Uint8Array(0), false, seededRandom(options.jitterSeed)) : null;
    this.model = new DiskModel({ blockSize: config.blockSize, chunkSize: C, layered: options.layerType !== null }, config.size);
    const N = 4 * config.blockSize;
    const groups = Math.floor(C / (8 * (N + 1)));
    const marks = [0, 3 * C, N * C, groups * N * C, Math.floor(config.size / 2 / C) * C, config.size];
    this.windows = [...new Set(marks.filter((m) => m <= config.size))].map((m) => [Math.max(0, m - 2 * C), Math.min(config.size + 2 * C, m + 2 * C)]);
  }

  static async create(config: HarnessConfig, options: CaseOptions, path: string): Promise<AsifHarness> {
    const h = new AsifHarness(config, options, path);
    const create = {
      blockCount: config.size / config.blockSize,
      blockSize: config.blockSize,
      chunkSize: config.chunkSize,
      maxSectorCount: config.maxSectorCount,
      layerType: options.layerType,
      parentUUID: options.layerType ? '01234567-89ab-cdef-0123-456789abcdef' : null,
      overwrite: true,
    };
    if (h.mem) await createAsifFile(h.mem, create);
    else await createAsif(path, create);
    h.image = await h.open(false);
    return h;
  }

  private async open(readOnly: boolean): Promise<AsifImage> {
    const tuning = { bitmapCacheBytes: this.options.cacheBytes, dirtyBitmapBytes: this.options.cacheBytes };
    if (this.mem) {
      const file = readOnly ? this.mem.copy({ readOnly: true }) : this.mem;
      return openAsifFile(file, tuning);
    }
    return openAsif(this.path, { readOnly, ...tuning });
  }

  range(at: Pos, len: Len): [number, number] | null {
    const { blockSize: bs } = this.config;
    const C = this.chunkSize;
    const size = this.image.size;
    const [ws, we] = this.windows[at.window % this.windows.length];
    let off = ws + Math.floor(at.frac * (we - ws));
    if (at.align === 'sector') off -= off % bs;
    if (at.align === 'chunk') off -= off % C;
    let length = len.unit === 'bytes' ? len.n : len.unit === 'sectors' ? len.n * bs : len.n * C;
    length += len.extra;
    if (off >= size) return null;
    length = Math.min(length, size - off);
    return length > 0 ? [off, length] : null;
  }

  async run(op: Op): Promise<void> {
    switch (op.kind) {
      case 'flush':
        await this.image.flush();
        return;
      case 'reopen':
        await this.image.close();
        if (op.peekReadOnly) {
          const ro = await this.open(true);
          await this.verifyWindows(ro);
          await ro.close();
        }
        this.image = await this.open(false);
        return;
      case 'truncate': {
        const C = this.chunkSize;
        const bs = this.config.blockSize;
        const cur = this.image.size;
        const target =
          op.to === 'grow' ? cur + C + bs : op.to === 'original' ? this.config.size : op.to === 'shrinkPartial' ? cur - C / 2 - bs : cur - 3 * C;
        if (target <= 0 || target > this.config.size + 2 * C) return;
        if (this.image.layerType === 'cache') {
          await expect(this.image.truncate(target)).rejects.toMatchObject({ errno: 'EPERM' });
          return;
        }
        await this.image.truncate(target);
        this.model.truncate(target);
        expect(this.image.size).toBe(target);
        return;
      }
      case 'batch': {
        const ranges: Array<[number, number]> = [];
        const chosen: Array<{ op: IoOp; range: [number, number] }> = [];
        for (const inner of op.ops) {
          if (!('len' in inner)) continue;
          const r = this.range(inner.at, inner.len);
          if (!r || ranges.some(([o, l]) => r[0] < o + l && o < r[0] + r[1])) continue;
          ranges.push(r);
          chosen.push({ op: inner, range: r });
        }
        const results = await Promise.all(chosen.map((c) => this.engineIo(c.op, c.range)));
        chosen.forEach((c, i) => this.modelIo(c.op, c.range, results[i]));
        return;
      }
      case 'cluster': {
        const start = this.range(op.at, { unit: 'bytes', n: 1, extra: 0 });
        if (!start) return;
        const jobs: Array<{ off: number; data: Buffer; zero: boolean }> = [];
        let off = start[0];
        for (const p of op.pieces) {
          off += p.gap;
          const length = Math.min(p.length, this.image.size - off);
          if (length <= 0) break;
          jobs.push({ off, data: p.zero ? Buffer.alloc(length) : patternBytes(length, p.seed), zero: p.zero });
          off += length;
        }
        await Promise.all(jobs.map((j) => (j.zero ? this.io.zero(j.off, j.data.length) : this.io.write(j.data, j.off))));
        for (const j of jobs) this.model.write(j.off, j.data);
        return;
      }
      default: {
        const r = this.range(op.at, op.len);
        if (!r) return;
        this.modelIo(op, r, await this.engineIo(op, r));
      }
    }
  }

  /** Runs one I/O on the image; returns the bytes read, or whether a fast zero was refused. */
  private async engineIo(op: IoOp, [off, len]: [number, number]): Promise<Buffer | boolean> {
    switch (op.kind) {
      case 'write':
        await this.io.write(patternBytes(len, op.seed), off, { fua: op.fua });
        return true;
      case 'zero':
        try {
          await this.io.zero(off, len, { noHole: op.noHole, fast: op.fast, fua: op.fua });
          return true;
        } catch (err) {
          if (op.fast && err instanceof RequestError && err.errno === 'ENOTSUP') return false;
          throw err;
        }
      case 'discard':
        await this.io.discard(off, len, { fua: op.fua });
        return true;
      case 'read': {
        const buf = Buffer.alloc(len, 0x5a);
        await this.image.read(buf, off);
        return buf;
      }
    }
  }

  private modelIo(op: IoOp, [off, len]: [number, number], result: Buffer | boolean): void {
    switch (op.kind) {
      case 'write':
        this.model.write(off, patternBytes(len, op.seed));
        return;
      case 'zero':
        if (result === true) this.model.zero(off, len);
        return;
      case 'discard':
        this.model.discard(off, len);
        return;
      case 'read':
        expectSameBytes(result as Buffer, this.model.read(off, len), `read ${off}+${len}`);
        return;
    }
  }

  async verifyWindows(image: AsifImage = this.image): Promise<void> {
    for (const [ws, we] of this.windows) {
      const end = Math.min(we, image.size);
      if (end <= ws) continue;
      const buf = Buffer.alloc(end - ws, 0x5a);
      await image.read(buf, ws);
      expectSameBytes(buf, this.model.read(ws, end - ws), `window ${ws}..${end}`);
    }
  }

  /** The map of the whole device agrees with the model, sector by sector where anything is. */
  async verifyMap(): Promise<void> {
    const bs = this.config.blockSize;
    const size = this.image.size;
    const runs: Run[] = [];
    const step = 2 ** 32;
    for (let off = 0; off < size; off += step) runs.push(...(await this.image.map(off, Math.min(step, size - off))));
    let pos = 0;
    for (const r of runs) {
      expect(r.offset).toBe(pos);
      pos += r.length;
    }
    expect(pos).toBe(size);
    const layered = this.model.geo.layered;
    const stateAt = (sector: number): Run['state'] => {
      let lo = 0;
      let hi = runs.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (runs[mid].offset <= sector * bs) lo = mid;
        else hi = mid - 1;
      }
      return runs[lo].state;
    };
    for (const r of runs) {
      if (r.state === 'absent') continue;
      for (let s = r.offset / bs; s < (r.offset + r.length) / bs; s++) {
        if (r.state === 'data' || layered) expect(this.model.isAbsent(s), `sector ${s} is ${r.state} in the image but absent in the model`).toBe(false);
        if (r.state === 'zero') expect(this.model.read(s * bs, bs).every((b) => b === 0), `sector ${s} is zero in the image`).toBe(true);
      }
    }
    for (let s = 0; s < size / bs; s++) {
      if (this.model.isAbsent(s)) continue;
      const state = stateAt(s);
      if (layered) expect(state, `sector ${s} holds something in the model`).not.toBe('absent');
      else if (!this.model.read(s * bs, bs).every((b) => b === 0)) expect(state, `sector ${s} holds data in the model`).toBe('data');
    }
  }

  /** Closes the image and checks the file: no errors, and the only leaks are chunks the image had freed. */
  async finish(): Promise<void> {
    await this.verifyWindows();
    await this.verifyMap();
    await this.image.close();
    const free = this.image.freeChunks();
    const report = this.mem ? await checkAsifFile(this.mem.copy({ readOnly: true })) : await checkAsif(this.path);
    expect(report.errors).toEqual([]);
    expect(report.doubleReferenced).toEqual([]);
    expect(report.leakedChunks).toEqual(free);
  }
}

function expectSameBytes(actual: Buffer, expected: Buffer, what: string): void {
  if (actual.equals(expected)) return;
  const at = actual.findIndex((b, i) => b !== expected[i]);
  expect.fail(`${what}: first difference at +${at} (image ${actual[at]}, model ${expected[at]})`);
}
