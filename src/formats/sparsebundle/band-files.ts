/**
 * The open band files of a sparse bundle: a bundle can have thousands of bands, so at most
 * `capacity` of them are kept open, least recently used first to go.
 *
 * - States of a band: not present (no file: never opened), closed, opening, open and idle,
 *   open and in use (`users` > 0).
 * - Invariants: a file in use is never closed (its descriptor number could otherwise be reused
 *   by another file mid-read); so the cache may hold more than `capacity` files while all are
 *   in use, and closes the extra ones as they become idle. Concurrent first uses of one band
 *   share one open.
 */
import path from 'node:path';
import type { BlockFile } from '../../io/block-file.js';
import { openFdFile } from '../../io/fd-file.js';

export const DEFAULT_OPEN_BANDS = 64;

interface Entry {
  file: Promise<BlockFile>;
  users: number;
}

/** A band's file name: its index in lowercase hex without leading zeros. */
export function bandName(index: number): string {
  return index.toString(16);
}

export class BandFiles {
  /** Least recently used first. */
  private readonly entries = new Map<number, Entry>();

  constructor(
    private readonly bandsDir: string,
    readonly capacity: number = DEFAULT_OPEN_BANDS,
  ) {}

  /** Runs `use` with the band's open file; the file stays open at least until `use` settles. */
  async with<T>(index: number, use: (file: BlockFile) => Promise<T> | T): Promise<T> {
    let entry = this.entries.get(index);
    if (entry) {
      this.entries.delete(index);
    } else {
      // Band files are read without a lock: a bundle is a directory, not one file to lock.
      const opening = openFdFile(path.join(this.bandsDir, bandName(index)), { readOnly: true, noLock: true });
      entry = { file: opening, users: 0 };
      // A failed open is not kept: the next use tries again.
      opening.catch(() => this.entries.get(index) === entry && this.entries.delete(index));
    }
    this.entries.set(index, entry);
    entry.users++;
    try {
      return await use(await entry.file);
    } finally {
      entry.users--;
      this.closeIdleExtra();
    }
  }

  private closeIdleExtra(): void {
    for (const [index, entry] of this.entries) {
      if (this.entries.size <= this.capacity) return;
      if (entry.users > 0) continue;
      this.entries.delete(index);
      void entry.file.then((f) => f.close()).catch(() => undefined);
    }
  }

  get openCount(): number {
    return this.entries.size;
  }

  async close(): Promise<void> {
    const all = [...this.entries.values()];
    this.entries.clear();
    await Promise.allSettled(all.map((e) => e.file.then((f) => f.close())));
  }
}
