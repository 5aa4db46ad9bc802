/**
 * The one place that pads requests to a layer's request alignment (Layer.requestAlignment):
 * a write or zero that does not cover whole units reads the rest of its first and last unit
 * (through whatever the target reads: the stack, so the layers below show through) and writes
 * whole units; a trim keeps only its whole units (it is a hint). Callers order overlapping
 * requests themselves (the export's range lock, on ranges rounded out to the unit), so two
 * read-modify-writes of one unit never interleave.
 */
import { RequestError } from '../block/errors.js';
import type { WriteOptions, ZeroOptions } from '../formats/layer.js';

/** What padding needs: the unit, how to read what is there now, and the layer's own calls. */
export interface PaddingTarget {
  readonly unit: number;
  read(buf: Buffer, offset: number): Promise<unknown>;
  write(buf: Buffer, offset: number, options?: WriteOptions): Promise<void>;
  zero(offset: number, length: number, options?: ZeroOptions): Promise<void>;
  discard(offset: number, length: number, options?: WriteOptions): Promise<void>;
}

export async function padWrite(t: PaddingTarget, buf: Buffer, offset: number, options?: WriteOptions): Promise<void> {
  const u = t.unit;
  if (u <= 1 || (offset % u === 0 && buf.length % u === 0)) return t.write(buf, offset, options);
  const start = Math.floor(offset / u) * u;
  const end = Math.ceil((offset + buf.length) / u) * u;
  const wide = Buffer.allocUnsafe(end - start);
  const headPartial = start < offset;
  const tailPartial = end > offset + buf.length;
  const reads: Promise<unknown>[] = [];
  if (headPartial) reads.push(t.read(wide.subarray(0, u), start));
  // The last unit, unless it is the first one and was just read.
  if (tailPartial && !(headPartial && end - u === start)) reads.push(t.read(wide.subarray(wide.length - u), end - u));
  await Promise.all(reads);
  buf.copy(wide, offset - start);
  return t.write(wide, start, options);
}

export async function padZero(t: PaddingTarget, offset: number, length: number, options: ZeroOptions = {}): Promise<void> {
  if (length === 0) return;
  const u = t.unit;
  if (u <= 1) return t.zero(offset, length, options);
  const innerStart = Math.ceil(offset / u) * u;
  const innerEnd = Math.floor((offset + length) / u) * u;
  const aligned = innerStart === offset && innerEnd === offset + length;
  if (options.fast && !aligned) throw new RequestError('ENOTSUP', 'zeroing part of a sector needs a read-modify-write');
  if (innerEnd > innerStart) await t.zero(innerStart, innerEnd - innerStart, options);
  const fua = options.fua ? { fua: true } : undefined;
  if (innerEnd <= innerStart) {
    // Entirely inside one unit (or two partial ones): one read-modify-write.
    await padWrite(t, Buffer.alloc(length), offset, fua);
    return;
  }
  if (offset < innerStart) await padWrite(t, Buffer.alloc(innerStart - offset), offset, fua);
  if (offset + length > innerEnd) await padWrite(t, Buffer.alloc(offset + length - innerEnd), innerEnd, fua);
}

export async function padTrim(t: PaddingTarget, offset: number, length: number, options?: WriteOptions): Promise<void> {
  const u = t.unit;
  if (u <= 1) return t.discard(offset, length, options);
  const start = Math.ceil(offset / u) * u;
  const end = Math.floor((offset + length) / u) * u;
  if (end > start) await t.discard(start, end - start, options);
}
