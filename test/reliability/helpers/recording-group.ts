/**
 * Several recording files (test/formats/helpers/recording-file.ts) under the layers of one
 * stack, with one shared order: which file each recorded entry went to, in the order the
 * entries were recorded. A crash at position g of that order leaves, in each file, the entries
 * of that file among the first g, so cutting the shared order gives a consistent crash of the
 * whole stack at one instant.
 */
import type { MemFile } from '../../formats/helpers/mem-file.js';
import { RecordingFile, type Recorded } from '../../formats/helpers/recording-file.js';

export class RecordingGroup {
  /** The id of the file of every entry, in recording order. */
  readonly order: number[] = [];
  readonly files: RecordingFile[] = [];

  /** A recording file over `inner` whose entries also go into the shared order. */
  add(inner: MemFile): RecordingFile {
    const rec = new RecordingFile(inner);
    const id = this.files.length;
    this.files.push(rec);
    const log = rec.log;
    const push = log.push.bind(log);
    // RecordingFile appends to `log` at the moment an entry happens; note the file there too.
    Object.defineProperty(log, 'push', {
      enumerable: false,
      value: (...items: Recorded[]): number => {
        for (let i = 0; i < items.length; i++) this.order.push(id);
        return push(...items);
      },
    });
    return rec;
  }

  /** The workload step stored with every entry from now on. */
  setOp(op: number): void {
    for (const f of this.files) f.op = op;
  }

  get length(): number {
    return this.order.length;
  }

  /** How many entries of each file lie among the first `g` of the shared order. */
  cutsAt(g: number): number[] {
    const cuts = this.files.map(() => 0);
    for (let i = 0; i < g; i++) cuts[this.order[i]]++;
    return cuts;
  }
}
