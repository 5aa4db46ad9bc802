/**
 * What clients read from one export, for `stackbd warm --ranges` (serve --record-reads DIR).
 *
 * - Stores one bit per MiB of the export (a 1 TiB export: 128 KiB), set by every read; the
 *   file holds the set bits as merged `OFFSET LENGTH` lines (warm-ranges.ts), so a boot's reads
 *   come back as a few dozen ranges.
 * - Written when the export's last client disconnects and when the export closes; a write
 *   goes to a temporary file renamed into place, so the file is always whole.
 * - A file left by an earlier run is read at start and kept (the union is recorded).
 */
import fs from 'node:fs/promises';
import type { Logger } from 'pino';
import { formatRanges, readRangesFile } from '../stack/warm-ranges.js';
import type { WarmRange } from '../stack/warm.js';

/** Reads are recorded in units of this many bytes. */
export const RECORD_GRANULE = 1024 * 1024;

export class ReadRecorder {
  private bits: Uint8Array;
  private changed = false;
  private saving: Promise<void> = Promise.resolve();

  constructor(
    readonly file: string,
    private readonly exportName: string,
    private readonly size: number,
    private readonly logger?: Logger,
  ) {
    this.bits = new Uint8Array(Math.ceil(Math.ceil(size / RECORD_GRANULE) / 8));
  }

  /** Takes in the ranges of a file an earlier run wrote (a file that does not exist is no error). */
  async load(): Promise<void> {
    const exists = await fs.stat(this.file).then(() => true, () => false);
    if (!exists) return;
    try {
      // Only what lies inside the export: the file may be of another disk.
      for (const r of await readRangesFile(this.file)) if (r.offset < this.size) this.mark(r.offset, Math.min(r.length, this.size - r.offset));
    } catch (err) {
      this.logger?.warn({ export: this.exportName, file: this.file, err }, 'the recorded reads of an earlier run cannot be read: recording afresh');
    }
    this.changed = false;
  }

  /** A read of [offset, offset + length). */
  note(offset: number, length: number): void {
    if (length > 0) this.mark(offset, length);
  }

  private mark(offset: number, length: number): void {
    const first = Math.floor(offset / RECORD_GRANULE);
    const last = Math.floor((offset + length - 1) / RECORD_GRANULE);
    // An export that grew (resize): the map grows with it, still one bit per MiB.
    if (last >= this.bits.length * 8) {
      const grown = new Uint8Array(Math.ceil((last + 1) / 8));
      grown.set(this.bits);
      this.bits = grown;
    }
    for (let i = first; i <= last; i++) {
      const mask = 1 << (i & 7);
      if ((this.bits[i >> 3] & mask) === 0) {
        this.bits[i >> 3] |= mask;
        this.changed = true;
      }
    }
  }

  /** The recorded ranges, merged. */
  ranges(): WarmRange[] {
    const out: WarmRange[] = [];
    const units = this.bits.length * 8;
    for (let i = 0; i < units; i++) {
      if (this.bits[i >> 3] === 0) {
        i |= 7;
        continue;
      }
      if ((this.bits[i >> 3] & (1 << (i & 7))) === 0) continue;
      const last = out[out.length - 1];
      if (last && last.offset + last.length === i * RECORD_GRANULE) last.length += RECORD_GRANULE;
      else out.push({ offset: i * RECORD_GRANULE, length: RECORD_GRANULE });
    }
    return out;
  }

  /** Writes the file if reads were recorded since it was last written; failures are logged. */
  save(): Promise<void> {
    this.saving = this.saving.then(() => this.write());
    return this.saving;
  }

  private async write(): Promise<void> {
    if (!this.changed) return;
    this.changed = false;
    const text = formatRanges(this.ranges(), [`reads of export "${this.exportName}" recorded by stackbd serve --record-reads, in ${RECORD_GRANULE}-byte units`, 'lines: OFFSET LENGTH (bytes); stackbd warm --ranges FILE STACK... warms them']);
    const tmp = `${this.file}.${process.pid}.tmp`;
    try {
      await fs.writeFile(tmp, text);
      await fs.rename(tmp, this.file);
      this.logger?.debug({ export: this.exportName, file: this.file }, 'recorded reads written');
    } catch (err) {
      this.changed = true;
      await fs.rm(tmp, { force: true }).catch(() => undefined);
      this.logger?.error({ export: this.exportName, file: this.file, err }, 'cannot write the recorded reads');
    }
  }
}
