/**
 * The sync timer of an export is armed by a write and fires once: a write that no client
 * flushes reaches disk by the timer; a timer sync that fails is tried again by the timer; a
 * closed export's pending timer syncs nothing more. (An idle export holds no timer at all,
 * which is what lets a server keep hundreds of them.)
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Layer } from '../../src/formats/layer.js';
import { openRaw } from '../../src/formats/raw.js';
import { Export } from '../../src/server/export.js';
import { Stack } from '../../src/stack/stack.js';
import { makeTempDir, removeDir } from '../helpers/tmp.js';

const dirs: string[] = [];
afterAll(() => Promise.all(dirs.map(removeDir)));

/** A RAW layer whose flushes are counted, the first `failures` of them failing. */
async function countingLayer(failures = 0): Promise<{ layer: Layer; flushes: { ok: number; failed: number } }> {
  const dir = await makeTempDir();
  dirs.push(dir);
  const file = path.join(dir, 'disk.raw');
  await fs.writeFile(file, Buffer.alloc(1024 * 1024));
  const raw = await openRaw(file);
  const flushes = { ok: 0, failed: 0 };
  const layer = Object.create(raw) as Layer;
  layer.flush = async () => {
    if (flushes.failed < failures) {
      flushes.failed++;
      throw new Error('injected sync failure');
    }
    await raw.flush();
    flushes.ok++;
  };
  layer.close = () => raw.close();
  return { layer, flushes };
}

/** Waits (turn after turn, bounded by the test's timeout) until `done` holds. */
async function until(done: () => boolean): Promise<void> {
  while (!done()) await new Promise((resolve) => setTimeout(resolve, 5));
}

describe('export sync timer', () => {
  it('syncs a write that no client flushes, once, by the timer', async () => {
    const { layer, flushes } = await countingLayer();
    const exp = new Export(new Stack([layer]), { name: 'd', syncIntervalMs: 10 });
    await exp.write(Buffer.alloc(4096, 7), 0);
    await until(() => flushes.ok >= 1);
    expect(exp.stats.syncs).toBe(1);
    // A second write arms it again.
    await exp.write(Buffer.alloc(4096, 8), 4096);
    await until(() => flushes.ok >= 2);
    await exp.close();
  });

  it('tries a failed timer sync again by the timer', async () => {
    const { layer, flushes } = await countingLayer(2);
    const exp = new Export(new Stack([layer]), { name: 'd', syncIntervalMs: 10 });
    await exp.write(Buffer.alloc(4096, 1), 0);
    await until(() => flushes.ok >= 1);
    expect(flushes.failed).toBe(2);
    await exp.close();
  });

  it('syncs nothing more once closed', async () => {
    const { layer, flushes } = await countingLayer();
    const exp = new Export(new Stack([layer]), { name: 'd', syncIntervalMs: 10 });
    await exp.write(Buffer.alloc(4096, 1), 0);
    await exp.close();
    const after = flushes.ok;
    // The timer armed by the write was cleared: a sync after close would fail on the closed file.
    await expect(exp.syncIfDirty('test')).resolves.toBeUndefined();
    expect(flushes.ok).toBe(after);
  });
});
