/**
 * Crash-test driver: runs a workload on an ASIF image over a recording file while keeping the
 * reference model's state after every step; then replays crashes and checks each crashed file
 * against the states the workload went through.
 *
 * A step is one awaited call (or one batch of concurrent calls). After step i the model state
 * is snapshot i + 1; a flush, a FUA write, a close or a truncate marks its state durable. A
 * crash at log entry c must leave every piece of every sector equal to its value in one of the
 * snapshots from the last durable one to the one after the last step that reached the disk.
 */
import { expect } from 'vitest';
import { RequestError } from '../../../src/block/errors.js';
import { checkAsifFile, createAsifFile, openAsifFile, type AsifImage } from '../../../src/formats/asif/index.js';
import type { LayerType } from '../../../src/formats/layer.js';
import { DiskModel, type SectorMap } from './disk-model.js';
import { MemFile, seededRandom } from './mem-file.js';
import { RecordingFile, replay, type Recorded } from './recording-file.js';
import { withTimeLimit } from './time-limit.js';
import { PaddedImage } from './padded.js';

const ZERO_UNIT = Buffer.alloc(512);

export interface CrashImageConfig {
  blockSize: 512 | 4096;
  chunkSize: number;
  maxSectorCount?: number;
  size: number;
  layerType: LayerType | null;
  /** Byte ranges the workload touches; everything else must stay absent. */
  windows: Array<[number, number]>;
  /** A tiny bitmap cache (many misses) instead of the default. */
  tinyCache?: boolean;
  seed: number;
}

export interface Recording {
  readonly config: CrashImageConfig;
  readonly base: Buffer;
  readonly log: Recorded[];
  readonly snaps: Array<{ sectors: SectorMap; size: number }>;
}

export class CrashDriver {
  image!: AsifImage;
  readonly model: DiskModel;
  private readonly rec: RecordingFile;
  private readonly snaps: Array<{ sectors: SectorMap; size: number }>;

  private constructor(
    readonly config: CrashImageConfig,
    private readonly base: Buffer,
  ) {
    this.rec = new RecordingFile(new MemFile('crash.asif', base, false, seededRandom(config.seed)));
    this.model = new DiskModel({ blockSize: config.blockSize, chunkSize: config.chunkSize, layered: config.layerType !== null }, config.size);
    this.snaps = [this.model.snapshot()];
  }

  static async start(config: CrashImageConfig): Promise<CrashDriver> {
    const created = new MemFile('crash.asif');
    await createAsifFile(created, {
      blockCount: config.size / config.blockSize,
      blockSize: config.blockSize,
      chunkSize: config.chunkSize,
      maxSectorCount: config.maxSectorCount,
      layerType: config.layerType,
    });
    const d = new CrashDriver(config, created.bytes());
    d.image = await d.open();
    return d;
  }

  private open(): Promise<AsifImage> {
    return openAsifFile(this.rec, { bitmapCacheBytes: this.config.tinyCache ? 1 : undefined });
  }

  /** Runs one step; `durable` says whether its end state is durable once it resolves. */
  async step(durable: boolean, work: (image: AsifImage, model: DiskModel) => Promise<void>): Promise<void> {
    this.rec.op = this.snaps.length - 1;
    await work(this.image, this.model);
    this.snaps.push(this.model.snapshot());
    if (durable) this.rec.mark(this.snaps.length - 1);
  }

  write(offset: number, data: Buffer, fua = false): Promise<void> {
    return this.step(fua, async (image, model) => {
      await new PaddedImage(image).write(data, offset, { fua });
      model.write(offset, data);
    });
  }

  zero(offset: number, length: number, options: { noHole?: boolean; fast?: boolean } = {}): Promise<void> {
    return this.step(false, async (image, model) => {
      try {
        await new PaddedImage(image).zero(offset, length, options);
        model.zero(offset, length);
      } catch (err) {
        if (!(options.fast && err instanceof RequestError)) throw err;
      }
    });
  }

  discard(offset: number, length: number): Promise<void> {
    return this.step(false, async (image, model) => {
      await image.discard(offset, length);
      model.discard(offset, length);
    });
  }

  /** Concurrent writes; they must not share a sector (see the crash test). */
  batch(jobs: Array<[number, Buffer]>): Promise<void> {
    return this.step(false, async (image, model) => {
      const io = new PaddedImage(image);
      await Promise.all(jobs.map(([o, d]) => io.write(d, o)));
      for (const [o, d] of jobs) model.write(o, d);
    });
  }

  flush(): Promise<void> {
    return this.step(true, (image) => image.flush());
  }

  /**
   * A flush started together with writes and whole-chunk discards (on disjoint sectors): the
   * flush makes durable what completed before it was called, the state before this step, not
   * the requests racing it.
   */
  async flushRacing(jobs: Array<[number, Buffer | number]>): Promise<void> {
    const before = this.snaps.length - 1;
    await this.step(false, async (image, model) => {
      const io = new PaddedImage(image);
      const run = ([o, d]: [number, Buffer | number]): Promise<void> => (typeof d === 'number' ? io.discard(o, d) : io.write(d, o));
      await Promise.all([image.flush(), ...jobs.map(run)]);
      for (const [o, d] of jobs) {
        if (typeof d === 'number') model.discard(o, d);
        else model.write(o, d);
      }
    });
    this.rec.mark(before);
  }

  reopen(): Promise<void> {
    return this.step(true, async (image) => {
      await image.close();
      this.image = await this.open();
    });
  }

  truncate(size: number): Promise<void> {
    return this.step(true, async (image, model) => {
      await image.truncate(size);
      model.truncate(size);
    });
  }

  async finish(): Promise<Recording> {
    await this.step(true, (image) => image.close());
    return { config: this.config, base: this.base, log: this.rec.log, snaps: this.snaps };
  }
}

/** Replays one crash and checks the file; throws with a description on any problem. */
export async function verifyCrash(recording: Recording, cut: number, reorder: boolean, tear: boolean, seed: number): Promise<void> {
  const { base, log, snaps, config } = recording;
  const bs = config.blockSize;
  const { file } = replay(base, log, { cut, reorder, tear, random: seededRandom(seed) });
  let durable = 0;
  let lastStep = -1;
  for (let i = 0; i < cut; i++) {
    const e = log[i];
    if (e.kind === 'mark') durable = e.durable;
    else lastStep = Math.max(lastStep, e.op);
  }
  const allowed = snaps.slice(durable, Math.max(durable, lastStep + 1) + 1);
  const what = `crash at entry ${cut}/${log.length} (reorder ${reorder}, torn ${tear}, durable state ${durable}, last step ${lastStep})`;

  const image = await withTimeLimit(openAsifFile(file), 10_000, `open after ${what}`);
  try {
    const report = await checkAsifFile(file);
    expect(report.errors, what).toEqual([]);
    expect(report.doubleReferenced, what).toEqual([]);
    expect(allowed.map((s) => s.size), what).toContain(image.size);
    const layered = config.layerType !== null;
    const runs = await image.map(0, image.size);
    for (const r of runs) {
      if (r.state === 'absent' || (!layered && r.state === 'zero')) continue;
      const inside = config.windows.some(([ws, we]) => ws <= r.offset && r.offset + r.length <= we);
      if (!inside) expect.fail(`${what}: ${r.state} at ${r.offset}+${r.length}, outside every window the workload touched`);
    }
    for (const [ws, we] of config.windows) {
      const end = Math.min(we, image.size);
      if (end <= ws) continue;
      const bytes = Buffer.alloc(end - ws);
      await image.read(bytes, ws);
      const absent = new Uint8Array((end - ws) / bs);
      for (const r of await image.map(ws, end - ws)) {
        if (r.state === 'absent') absent.fill(1, (r.offset - ws) / bs, (r.offset + r.length - ws) / bs);
      }
      // Compared in 512-byte pieces, the disk's atomic unit: an unflushed 4096-byte sector may
      // hold a mix of old and new pieces.
      for (let u = 0; u < (end - ws) / 512; u++) {
        const at = ws + u * 512;
        const s = Math.floor(at / bs);
        const within = at - s * bs;
        const isAbsent = absent[Math.floor((u * 512) / bs)] === 1;
        const isZero = bytes.compare(ZERO_UNIT, 0, 512, u * 512, u * 512 + 512) === 0;
        let ok = false;
        let previous: Buffer | undefined | null = null;
        for (const snap of allowed) {
          const want = snap.sectors.get(s);
          if (want === previous) continue;
          previous = want;
          ok = !want ? (layered ? isAbsent : isZero) : (!layered || !isAbsent) && want.compare(bytes, u * 512, u * 512 + 512, within, within + 512) === 0;
          if (ok) break;
        }
        if (!ok) {
          const show = (b: Buffer | undefined): string => (!b ? 'absent' : b.every((x) => x === 0) ? 'zeros' : b.subarray(within, within + 8).toString('hex'));
          const got = isAbsent ? 'absent' : isZero ? 'zeros' : bytes.subarray(u * 512, u * 512 + 8).toString('hex');
          expect.fail(`${what}: bytes ${at}..${at + 512} hold ${got}; allowed: ${allowed.map((a) => show(a.sectors.get(s))).join(', ')}`);
        }
      }
    }
  } finally {
    await image.close();
  }
}

/**
 * Every prefix ending at a sync, the whole log, and `randomCuts` random crashes (torn,
 * reordered); with `everyCut`, also a torn and a reordered crash at every entry of the log.
 */
export async function verifyAllCrashes(recording: Recording, randomCuts: number, everyCut = false): Promise<number> {
  const { log } = recording;
  let crashes = 0;
  for (let i = 0; i <= log.length; i++) {
    if (i === log.length || log[i].kind === 'sync') {
      await verifyCrash(recording, i, false, false, i);
      crashes++;
    }
  }
  const rnd = seededRandom(recording.config.seed * 31 + 7);
  for (let n = 0; n < randomCuts; n++) {
    const cut = 1 + Math.floor(rnd() * log.length);
    const mode = n % 3;
    await verifyCrash(recording, cut, mode === 2, mode >= 1, n);
    crashes++;
  }
  for (let cut = 1; everyCut && cut <= log.length; cut++) {
    await verifyCrash(recording, cut, false, true, cut);
    await verifyCrash(recording, cut, true, false, cut * 3);
    await verifyCrash(recording, cut, true, true, cut * 5);
    crashes += 3;
  }
  return crashes;
}
