/**
 * A BlockFile that records what reaches the disk, for crash tests: every completed write (with
 * a copy of its bytes), every truncate, and every sync at the moment it is asked for (a write
 * that completes while a sync runs is not covered by it). Tests add marks: "everything up to
 * model state N is durable from here on". `replay` rebuilds the file a crash could leave.
 */
import type { BlockFile } from '../../../src/io/block-file.js';
import { MemFile } from './mem-file.js';

export type Recorded =
  | { kind: 'write'; position: number; bytes: Buffer; op: number }
  | { kind: 'truncate'; length: number; op: number }
  | { kind: 'sync'; op: number }
  | { kind: 'mark'; durable: number };

export class RecordingFile implements BlockFile {
  readonly log: Recorded[] = [];
  /** The workload step running now; stored with each entry. */
  op = 0;

  constructor(private readonly inner: MemFile) {}

  get path(): string {
    return this.inner.path;
  }

  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  read(buf: Uint8Array, position: number): Promise<void> {
    return this.inner.read(buf, position);
  }

  async write(buf: Uint8Array, position: number): Promise<void> {
    await this.inner.write(buf, position);
    this.log.push({ kind: 'write', position, bytes: Buffer.from(buf), op: this.op });
  }

  async truncate(length: number): Promise<void> {
    await this.inner.truncate(length);
    this.log.push({ kind: 'truncate', length, op: this.op });
  }

  async sync(): Promise<void> {
    this.log.push({ kind: 'sync', op: this.op });
    await this.inner.sync();
  }

  size(): Promise<number> {
    return this.inner.size();
  }

  async close(): Promise<void> {
    // The recording outlives sessions: the workload reopens the same file.
  }

  mark(durable: number): void {
    this.log.push({ kind: 'mark', durable });
  }
}

export interface Crash {
  /** Entries before this index are candidates; the crash happens here. */
  cut: number;
  /** Entries after the last sync before the cut reach the disk in any subset (not only a prefix). */
  reorder: boolean;
  /** The last applied write lands only in part: its first `tornSectors` 512-byte sectors. */
  tear: boolean;
  random: () => number;
}

/** The file as a crash could leave it; also which entries landed. */
export function replay(base: Buffer, log: readonly Recorded[], crash: Crash): { file: MemFile; applied: Recorded[] } {
  const file = new MemFile('replayed.asif', base, true);
  let lastSync = -1;
  for (let i = 0; i < crash.cut; i++) if (log[i].kind === 'sync') lastSync = i;
  const applied: Recorded[] = [];
  let tearable: Recorded | null = null;
  for (let i = 0; i < crash.cut; i++) {
    const e = log[i];
    if (e.kind === 'sync' || e.kind === 'mark') continue;
    if (crash.reorder && i > lastSync && crash.random() < 0.5) continue;
    applied.push(e);
    // Only a write no sync has covered yet can be torn.
    tearable = i > lastSync && e.kind === 'write' ? e : null;
  }
  for (const e of applied) {
    if (e.kind === 'truncate') {
      file.cut(e.length);
    } else if (e.kind === 'write' && crash.tear && e === tearable) {
      // Sectors of the file are atomic; a torn write stops at a sector boundary of the file.
      const boundaries: number[] = [];
      for (let b = Math.ceil(e.position / 512) * 512; b < e.position + e.bytes.length; b += 512) boundaries.push(b);
      const stop = boundaries.length > 0 ? boundaries[Math.floor(crash.random() * boundaries.length)] : e.position;
      file.put(e.bytes.subarray(0, stop - e.position), e.position);
    } else if (e.kind === 'write') {
      file.put(e.bytes, e.position);
    }
  }
  return { file, applied };
}
