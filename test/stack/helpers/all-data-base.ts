/**
 * A base layer over bytes in memory that, like a remote http(s) object, has no map of its
 * holes: it reports everything as data. It counts what is read from it (bytes, reads, the most
 * reads at once) and can hold reads back until the test lets them go.
 */
import type { Run } from '../../../src/block/runs.js';
import type { Layer } from '../../../src/formats/layer.js';

export interface AllDataBase extends Layer {
  bytesRead: number;
  reads: number;
  maxInFlight: number;
  /** Ranges read, in the order the reads started. */
  readLog: Array<[offset: number, length: number]>;
  /** While set, every read waits for it. */
  gate: Promise<void> | null;
}

export function allDataBase(content: Buffer, path = 'mem://base'): AllDataBase {
  let inFlight = 0;
  const refuse = (): Promise<never> => Promise.reject(new Error('read-only'));
  const base: AllDataBase = {
    path,
    format: 'http',
    blockSize: 512,
    size: content.length,
    readOnly: true,
    layerUUID: null,
    parentUUID: null,
    layerType: null,
    bytesRead: 0,
    reads: 0,
    maxInFlight: 0,
    readLog: [],
    gate: null,
    pin: async () => ({ size: content.length }),
    map: async (offset: number, length: number): Promise<Run[]> => (length > 0 ? [{ offset, length, state: 'data' }] : []),
    read: async (buf: Buffer, offset: number) => {
      base.reads++;
      base.bytesRead += buf.length;
      base.readLog.push([offset, buf.length]);
      inFlight++;
      base.maxInFlight = Math.max(base.maxInFlight, inFlight);
      try {
        // A turn of the event loop, so that reads started together are in flight together.
        await new Promise((resolve) => setImmediate(resolve));
        if (base.gate) await base.gate;
        content.copy(buf, 0, offset, offset + buf.length);
      } finally {
        inFlight--;
      }
    },
    write: refuse,
    zero: refuse,
    discard: refuse,
    truncate: refuse,
    flush: async () => undefined,
    close: async () => undefined,
  };
  return base;
}

/** Content of `chunks` MiB: chunk i holds random-looking bytes when `dataChunks` has i, zeros otherwise. */
export function sparseContent(chunks: number, dataChunks: ReadonlySet<number>): Buffer {
  const MiB = 1024 * 1024;
  const content = Buffer.alloc(chunks * MiB);
  let x = 0x9e3779b9;
  for (const c of dataChunks) {
    for (let i = c * MiB; i < (c + 1) * MiB; i += 4) {
      x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
      content.writeUInt32LE((x | 1) >>> 0, i);
    }
  }
  return content;
}
