/**
 * Model-based test of stack composition: a base (RAW or ASIF), an optional cache layer and
 * overlays appended as the run goes, driven by random writes, zeroes, trims, reads, flushes
 * and reopens, compared with a byte array. The base file never changes.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAsif } from '../../src/formats/asif/index.js';
import { openImage } from '../../src/formats/open-image.js';
import { DiskImage } from '../../src/stack/disk-image.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const SIZE = 6 * 1024 * 1024;
const MiB = 1024 * 1024;

type Op =
  | { kind: 'write'; offset: number; length: number; seed: number }
  | { kind: 'zero'; offset: number; length: number; noHole: boolean }
  | { kind: 'trim'; offset: number; length: number }
  | { kind: 'read'; offset: number; length: number }
  | { kind: 'flush' }
  | { kind: 'reopen' }
  | { kind: 'append' };

/** Offsets cluster on sector and chunk edges, where the bugs live. */
const offsetArb = fc.oneof(
  fc.integer({ min: 0, max: SIZE - 1 }),
  fc.integer({ min: 0, max: SIZE / 512 - 1 }).map((s) => s * 512),
  fc.integer({ min: 0, max: SIZE / MiB - 1 }).map((c) => c * MiB),
);
const lengthArb = fc.oneof(fc.integer({ min: 1, max: 5000 }), fc.integer({ min: 1, max: 8 }).map((n) => n * 512), fc.integer({ min: 1, max: 2 * MiB }));

function ranged<T extends { offset: number; length: number }>(op: T): T {
  return { ...op, length: Math.max(1, Math.min(op.length, SIZE - op.offset)) };
}

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('write' as const), offset: offsetArb, length: lengthArb, seed: fc.integer() }).map(ranged) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('zero' as const), offset: offsetArb, length: lengthArb, noHole: fc.boolean() }).map(ranged) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('trim' as const), offset: offsetArb, length: lengthArb }).map(ranged) },
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('read' as const), offset: offsetArb, length: lengthArb }).map(ranged) },
  { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'append' as const }) },
);

/** What the stack must read: `value`, or 0 where a trim left the bytes undefined. */
class Model {
  readonly value: Buffer;
  readonly mayBeZero = new Uint8Array(SIZE);
  constructor(initial: Buffer) {
    this.value = Buffer.from(initial);
  }
  set(offset: number, data: Buffer): void {
    data.copy(this.value, offset);
    this.mayBeZero.fill(0, offset, offset + data.length);
  }
  trim(offset: number, length: number): void {
    this.mayBeZero.fill(1, offset, offset + length);
  }
  /** Checks a read and, where a trimmed byte was observed, pins it down. */
  check(offset: number, got: Buffer): string | null {
    for (let i = 0; i < got.length; i++) {
      const at = offset + i;
      if (got[i] === this.value[at]) continue;
      if (this.mayBeZero[at] && got[i] === 0) {
        this.value[at] = 0;
        continue;
      }
      return `byte ${at}: read ${got[i]}, expected ${this.value[at]}${this.mayBeZero[at] ? ' or 0' : ''}`;
    }
    for (let i = 0; i < got.length; i++) this.mayBeZero[offset + i] = 0;
    return null;
  }
}

function pattern(seed: number, length: number): Buffer {
  const buf = Buffer.allocUnsafe(length);
  let x = seed | 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buf[i] = x & 0xff;
  }
  return buf;
}

async function sha256(file: string): Promise<string> {
  return createHash('sha256').update(await fs.readFile(file)).digest('hex');
}

describe('stack composition against a model', () => {
  let dir: string;
  let baseContent: Buffer;
  let caseNo = 0;

  beforeAll(async () => {
    dir = await makeTempDir();
    baseContent = randomBytes(SIZE);
    // Holes in the base too: zeros that an ASIF base reports as absent.
    baseContent.fill(0, 2 * MiB, 3 * MiB + 1000);
  });
  afterAll(() => removeDir(dir));

  async function makeBase(kind: 'raw' | 'asif', where: string): Promise<string> {
    if (kind === 'raw') {
      const file = path.join(where, 'base.raw');
      await fs.writeFile(file, baseContent);
      return file;
    }
    const file = path.join(where, 'base.asif');
    await createAsif(file, { blockCount: SIZE / 512 });
    const layer = await openImage(file, { readOnly: false });
    for (let off = 0; off < SIZE; off += MiB) {
      const piece = baseContent.subarray(off, off + MiB);
      if (piece.some((b) => b !== 0)) await layer.write(piece, off);
    }
    await layer.close();
    return file;
  }

  for (const baseKind of ['raw', 'asif'] as const) {
    for (const withCache of [false, true]) {
      it(`${baseKind} base${withCache ? ' + cache' : ''} + overlays`, async () => {
        await fc.assert(
          fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 40 }), async (ops) => {
            const where = path.join(dir, `case-${caseNo++}`);
            await fs.mkdir(where);
            const base = await makeBase(baseKind, where);
            const baseHash = await sha256(base);
            const paths = [base];
            let image = await DiskImage.open(base, { mode: 'readOnly' });
            if (withCache) {
              paths.push(path.join(where, 'cache.asif'));
              image = await image.appending({ path: paths[paths.length - 1], type: 'cache' });
            }
            paths.push(path.join(where, 'overlay-0.asif'));
            image = await image.appending({ path: paths[paths.length - 1], type: 'overlay' });
            await image.close();
            image = await DiskImage.open(paths, { mode: 'readWrite' });
            const model = new Model(baseContent);
            try {
              for (const op of ops) {
                switch (op.kind) {
                  case 'write': {
                    const data = pattern(op.seed, op.length);
                    await image.stack.write(data, op.offset);
                    model.set(op.offset, data);
                    break;
                  }
                  case 'zero':
                    await image.stack.writeZeroes(op.offset, op.length, { noHole: op.noHole });
                    model.set(op.offset, Buffer.alloc(op.length));
                    break;
                  case 'trim':
                    await image.stack.trim(op.offset, op.length);
                    model.trim(op.offset, op.length);
                    break;
                  case 'read': {
                    const got = Buffer.alloc(op.length);
                    await image.stack.read(got, op.offset);
                    const problem = model.check(op.offset, got);
                    if (problem) throw new Error(`read ${op.offset}+${op.length}: ${problem}`);
                    break;
                  }
                  case 'flush':
                    await image.flush();
                    break;
                  case 'reopen':
                    await image.close();
                    image = await DiskImage.open(paths, { mode: 'readWrite' });
                    break;
                  case 'append':
                    paths.push(path.join(where, `overlay-${paths.length}.asif`));
                    image = await image.appending({ path: paths[paths.length - 1], type: 'overlay' });
                    break;
                }
              }
              const all = Buffer.alloc(SIZE);
              await image.stack.read(all, 0);
              const problem = model.check(0, all);
              if (problem) throw new Error(`final read: ${problem}`);
            } finally {
              await image.close();
            }
            // After reopening, everything reads the same (what close made durable).
            const again = await DiskImage.open(paths, { mode: 'readOnly' });
            try {
              const all = Buffer.alloc(SIZE);
              await again.stack.read(all, 0);
              expect(model.check(0, all)).toBeNull();
            } finally {
              await again.close();
            }
            expect(await sha256(base)).toBe(baseHash);
            await fs.rm(where, { recursive: true, force: true });
          }),
          { numRuns: 15 },
        );
      });
    }
  }
});
