/**
 * The reference model for the ASIF engine: what each sector of one layer should hold.
 *
 * A sector is either absent (never written in this layer: a layer lets the one below show
 * through, a standalone image reads zeros) or holds bytes. The rules are the Layer contract's
 * and issue 3's, written as plainly as possible:
 * - write: the sectors get the bytes; bytes of a partial sector outside the range keep what
 *   the sector held, or zeros if it was absent ("as if nothing lay below");
 * - zero: the same as writing zeros;
 * - discard: each whole chunk in the range that holds anything becomes zeros; everything else
 *   keeps its bytes (the engine makes discard deterministic in this way);
 * - truncate: shrinking zeroes everything past the new end (so growing reads zeros again).
 */
export interface ModelGeometry {
  readonly blockSize: number;
  readonly chunkSize: number;
  /** Absent sectors fall through (a layer) rather than reading as zeros. */
  readonly layered: boolean;
}

export type SectorMap = ReadonlyMap<number, Buffer>;

export class DiskModel {
  private sectors = new Map<number, Buffer>();
  private readonly zeroSector: Buffer;

  constructor(
    readonly geo: ModelGeometry,
    public size: number,
  ) {
    this.zeroSector = Buffer.alloc(geo.blockSize);
  }

  snapshot(): { sectors: SectorMap; size: number } {
    return { sectors: new Map(this.sectors), size: this.size };
  }

  write(offset: number, data: Buffer): void {
    const bs = this.geo.blockSize;
    const end = offset + data.length;
    for (let s = Math.floor(offset / bs); s * bs < end; s++) {
      const start = s * bs;
      if (offset <= start && start + bs <= end) {
        this.sectors.set(s, Buffer.from(data.subarray(start - offset, start - offset + bs)));
        continue;
      }
      const sector = Buffer.from(this.sectors.get(s) ?? this.zeroSector);
      const from = Math.max(offset, start);
      const to = Math.min(end, start + bs);
      data.copy(sector, from - start, from - offset, to - offset);
      this.sectors.set(s, sector);
    }
  }

  zero(offset: number, length: number): void {
    this.write(offset, Buffer.alloc(length));
  }

  discard(offset: number, length: number): void {
    const { chunkSize: C, blockSize: bs } = this.geo;
    const perChunk = C / bs;
    for (let l = Math.ceil(offset / C); (l + 1) * C <= offset + length; l++) {
      let holds = false;
      for (let s = l * perChunk; s < (l + 1) * perChunk && !holds; s++) holds = this.sectors.has(s);
      if (!holds) continue;
      for (let s = l * perChunk; s < (l + 1) * perChunk; s++) this.sectors.set(s, this.zeroSector);
    }
  }

  truncate(size: number): void {
    if (size < this.size) this.zero(size, this.size - size);
    this.size = size;
  }

  /** The bytes a read of this layer returns (absent reads as zeros). */
  read(offset: number, length: number): Buffer {
    return readSectors(this.sectors, this.geo.blockSize, offset, length);
  }

  isAbsent(sector: number): boolean {
    return !this.sectors.has(sector);
  }
}

export function readSectors(sectors: SectorMap, blockSize: number, offset: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  const end = offset + length;
  for (let s = Math.floor(offset / blockSize); s * blockSize < end; s++) {
    const sector = sectors.get(s);
    if (!sector) continue;
    const start = s * blockSize;
    const from = Math.max(offset, start);
    const to = Math.min(end, start + blockSize);
    sector.copy(out, from - offset, from - start, to - start);
  }
  return out;
}

/** Deterministic bytes for a write, different for every seed. */
export function patternBytes(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
    if (i + 1 < length) out[i + 1] = (x >>> 8) & 0xff;
    if (i + 2 < length) out[i + 2] = (x >>> 16) & 0xff;
    if (i + 3 < length) out[i + 3] = (x >>> 24) & 0xff;
  }
  return out;
}
