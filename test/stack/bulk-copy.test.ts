/**
 * The pipelined copier on its own: every data run arrives, zero runs go to `zero`, absent ones
 * nowhere; no more pieces than asked are in flight; an ordered sink sees writes one at a time in
 * disk order; two pieces never write into one 4 KiB block at once; progress only grows and ends
 * at the size; a failing read stops the copy after what was in flight, with the first error.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { Run, RunState } from '../../src/block/runs.js';
import { bulkCopy, type BulkSource } from '../../src/stack/bulk-copy.js';

const KiB = 1024;

/** A source over `content` whose map is `runs` (clipped to each request, honouring maxRuns). */
function sourceOf(content: Buffer, runs: Run[], hooks: { onRead?: (offset: number, length: number) => Promise<void> } = {}): BulkSource & { maxReading: number } {
  let reading = 0;
  const source = {
    size: content.length,
    maxReading: 0,
    map: async (offset: number, length: number, maxRuns: number): Promise<Run[]> => {
      const out: Run[] = [];
      for (const r of runs) {
        const start = Math.max(r.offset, offset);
        const end = Math.min(r.offset + r.length, offset + length);
        if (end > start) out.push({ offset: start, length: end - start, state: r.state });
      }
      return out.slice(0, maxRuns);
    },
    read: async (buf: Buffer, offset: number): Promise<void> => {
      reading++;
      source.maxReading = Math.max(source.maxReading, reading);
      try {
        await new Promise((resolve) => setImmediate(resolve));
        await hooks.onRead?.(offset, buf.length);
        content.copy(buf, 0, offset, offset + buf.length);
      } finally {
        reading--;
      }
    },
  };
  return source;
}

/** Runs of alternating states, `step` bytes each, cycling through `states`. */
function striped(size: number, step: number, states: RunState[]): Run[] {
  const runs: Run[] = [];
  for (let at = 0, i = 0; at < size; at += step, i++) runs.push({ offset: at, length: Math.min(step, size - at), state: states[i % states.length] });
  return runs;
}

describe('bulkCopy', () => {
  it('copies data runs, zeroes zero runs, skips absent ones, with at most inFlight pieces at once', async () => {
    const content = randomBytes(1024 * KiB);
    const runs = striped(content.length, 12 * KiB, ['data', 'zero', 'absent', 'data']);
    const source = sourceOf(content, runs);
    const out = Buffer.alloc(content.length, 0xee);
    const zeroed: Run[] = [];
    let writing = 0;
    let maxWriting = 0;
    await bulkCopy(
      source,
      {
        write: async (data, at) => {
          writing++;
          maxWriting = Math.max(maxWriting, writing);
          await new Promise((resolve) => setImmediate(resolve));
          data.copy(out, at);
          writing--;
        },
        zero: async (at, length) => {
          zeroed.push({ offset: at, length, state: 'zero' });
          out.fill(0, at, at + length);
        },
      },
      { pieceBytes: 64 * KiB, inFlight: 3 },
    );
    for (const r of runs) {
      const got = out.subarray(r.offset, r.offset + r.length);
      if (r.state === 'data') expect(got.equals(content.subarray(r.offset, r.offset + r.length))).toBe(true);
      else if (r.state === 'zero') expect(got.every((b) => b === 0)).toBe(true);
      else expect(got.every((b) => b === 0xee)).toBe(true);
    }
    expect(zeroed.reduce((n, r) => n + r.length, 0)).toBe(runs.filter((r) => r.state === 'zero').reduce((n, r) => n + r.length, 0));
    // Pieces overlap (more than one read at a time) but never more than asked.
    expect(source.maxReading).toBeGreaterThan(1);
    expect(source.maxReading).toBeLessThanOrEqual(3 * Math.ceil((64 * KiB) / (12 * KiB)));
    expect(maxWriting).toBeLessThanOrEqual(3);
  });

  it('gives an ordered sink its writes one at a time in increasing disk order, and leaves out zero data', async () => {
    const content = randomBytes(2048 * KiB);
    content.fill(0, 256 * KiB, 512 * KiB); // data that is all zeros: not written
    const source = sourceOf(content, striped(content.length, 100 * KiB, ['data', 'absent', 'data', 'zero']));
    const writes: Array<[number, number]> = [];
    let writing = 0;
    let overlapped = false;
    const out = Buffer.alloc(content.length);
    await bulkCopy(
      source,
      {
        ordered: true,
        skipZeroData: true,
        write: async (data, at) => {
          if (writing > 0) overlapped = true;
          writing++;
          await new Promise((resolve) => setImmediate(resolve));
          writes.push([at, data.length]);
          data.copy(out, at);
          writing--;
        },
      },
      { pieceBytes: 64 * KiB, inFlight: 6 },
    );
    expect(overlapped).toBe(false);
    for (let i = 1; i < writes.length; i++) expect(writes[i][0]).toBeGreaterThanOrEqual(writes[i - 1][0] + writes[i - 1][1]);
    expect(writes.some(([at, n]) => at < 512 * KiB && at + n > 256 * KiB && at >= 256 * KiB)).toBe(false);
    const expected = Buffer.alloc(content.length);
    for (const r of striped(content.length, 100 * KiB, ['data', 'absent', 'data', 'zero'])) {
      if (r.state === 'data') content.copy(expected, r.offset, r.offset, r.offset + r.length);
    }
    expect(out.equals(expected)).toBe(true);
    expect(source.maxReading).toBeGreaterThan(1);
  });

  it('never lets two pieces write into one 4 KiB block at once', async () => {
    // Runs of 1536 bytes: piece boundaries fall inside 4 KiB blocks.
    const content = randomBytes(256 * KiB);
    const source = sourceOf(content, striped(content.length, 1536, ['data', 'absent']));
    const busy = new Map<number, number>();
    let clash = false;
    await bulkCopy(
      source,
      {
        write: async (data, at) => {
          const blocks: number[] = [];
          for (let b = Math.floor(at / 4096); b <= Math.floor((at + data.length - 1) / 4096); b++) blocks.push(b);
          for (const b of blocks) {
            if ((busy.get(b) ?? 0) > 0) clash = true;
            busy.set(b, (busy.get(b) ?? 0) + 1);
          }
          // Writes of different lengths of time, so that pieces' writes overlap.
          for (let i = 0; i < Math.floor(at / 1536) % 7; i++) await new Promise((resolve) => setImmediate(resolve));
          for (const b of blocks) busy.set(b, (busy.get(b) ?? 0) - 1);
        },
      },
      { pieceBytes: 3 * 1536, inFlight: 8 },
    );
    expect(clash).toBe(false);
  });

  it('reports progress that only grows and ends at the size', async () => {
    const content = randomBytes(1024 * KiB);
    const seen: number[] = [];
    await bulkCopy(sourceOf(content, striped(content.length, 40 * KiB, ['data', 'absent'])), { write: async () => undefined }, {
      pieceBytes: 32 * KiB,
      inFlight: 4,
      onProgress: (done, total) => {
        expect(total).toBe(content.length);
        seen.push(done);
      },
    });
    expect(seen.length).toBeGreaterThan(4);
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThanOrEqual(seen[i - 1]);
    expect(seen[seen.length - 1]).toBe(content.length);
  });

  it('stops at the first failing read: nothing new starts, what is in flight finishes, the error is thrown', async () => {
    const content = randomBytes(4096 * KiB);
    const failAt = 1024 * KiB;
    let reading = 0;
    let readsAfterFailure = 0;
    let failed = false;
    const source = sourceOf(content, [{ offset: 0, length: content.length, state: 'data' }], {
      onRead: async (offset, length) => {
        if (failed) readsAfterFailure++;
        reading++;
        try {
          if (offset <= failAt && failAt < offset + length) {
            failed = true;
            throw new Error('injected read failure');
          }
        } finally {
          reading--;
        }
      },
    });
    const written: number[] = [];
    await expect(bulkCopy(source, { write: async (_data, at) => void written.push(at) }, { pieceBytes: 64 * KiB, inFlight: 4 })).rejects.toThrow('injected read failure');
    // Nothing is running when the promise settles, and no piece read after the failure except
    // those already in flight (at most inFlight of them).
    expect(reading).toBe(0);
    expect(readsAfterFailure).toBeLessThanOrEqual(4);
    expect(written.every((at) => at < failAt + 4 * 64 * KiB)).toBe(true);
    expect(written.includes(failAt)).toBe(false);
  });

  it('refuses nonsense sizes', async () => {
    const source = sourceOf(Buffer.alloc(4096), []);
    await expect(bulkCopy(source, { write: async () => undefined }, { inFlight: 0 })).rejects.toThrow(RangeError);
    await expect(bulkCopy(source, { write: async () => undefined }, { pieceBytes: 1.5 })).rejects.toThrow(RangeError);
  });
});
