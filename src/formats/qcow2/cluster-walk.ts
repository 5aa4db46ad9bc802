/**
 * Turns a guest byte range into segments, each one kind of qcow2 storage:
 * - `data`: bytes at `host` in the image file (neighbouring clusters whose host clusters are
 *   neighbours too are one segment, so a sequential read is one file read);
 * - `zero`: reads as zeros (the zero flag of version 3, with or without a preallocated host
 *   cluster, or an extended L2 entry's zero bit);
 * - `unallocated`: not in this image (the backing file answers, or zeros);
 * - `compressed`: part of one compressed cluster, whose L2 entry is `hi`/`lo` (never merged).
 * Extended L2 entries are read subcluster by subcluster (allocation and zero bitmaps).
 *
 * Every L2 entry is checked as it is used: a data offset must be cluster-aligned and start
 * inside the file, compressed bytes must lie inside the file, a subcluster cannot be both allocated and zero, an allocated subcluster
 * needs a host offset. Broken entries are CorruptedImageError naming the guest offset.
 */
import { CorruptedImageError } from '../../block/errors.js';
import { compressedSpan } from './compressed.js';
import { entryOffset } from './geometry.js';
import type { ClusterTables } from './tables.js';

export type SegmentKind = 'data' | 'zero' | 'unallocated' | 'compressed';

export interface Segment {
  offset: number;
  length: number;
  kind: SegmentKind;
  /** data: host offset of the segment's first byte; otherwise 0. */
  host: number;
  /** compressed: the two halves of the cluster's L2 entry; otherwise 0. */
  hi: number;
  lo: number;
}

const COMPRESSED = 0x40000000;
const COPIED = 0x80000000;

function push(out: Segment[], offset: number, length: number, kind: SegmentKind, host = 0, hi = 0, lo = 0): void {
  const last = out[out.length - 1];
  if (last && kind !== 'compressed' && last.kind === kind && last.offset + last.length === offset && (kind !== 'data' || last.host + last.length === host)) {
    last.length += length;
    return;
  }
  out.push({ offset, length, kind, host, hi, lo });
}

/**
 * Segments covering [offset, offset + length) in order. With `limit`, may stop once that many
 * segments were found (they then cover a prefix).
 */
export async function walkClusters(tables: ClusterTables, offset: number, length: number, limit = Number.POSITIVE_INFINITY): Promise<Segment[]> {
  const g = tables.geometry;
  const out: Segment[] = [];
  const end = offset + length;
  let pos = offset;
  while (pos < end && out.length < limit) {
    const l1Index = Math.floor(pos / g.l2Span);
    const tableEnd = Math.min(end, (l1Index + 1) * g.l2Span);
    const l2Offset = tables.l2Offset(l1Index);
    if (l2Offset === 0) {
      push(out, pos, tableEnd - pos, 'unallocated');
      pos = tableEnd;
      continue;
    }
    const table = tables.cached(l2Offset) ?? (await tables.load(l2Offset));
    while (pos < tableEnd) {
      const cluster = Math.floor(pos / g.clusterSize);
      const clusterStart = cluster * g.clusterSize;
      const clusterEnd = Math.min(tableEnd, clusterStart + g.clusterSize);
      const at = (cluster % g.l2Entries) * g.l2EntryBytes;
      const hi = table.readUInt32BE(at);
      const lo = table.readUInt32BE(at + 4);
      if (hi & COMPRESSED) {
        compressedSpan(g, hi, lo, clusterStart);
        push(out, pos, clusterEnd - pos, 'compressed', 0, hi, lo);
      } else if (g.extendedL2) {
        walkSubclusters(out, tables, pos, clusterStart, clusterEnd, hi, lo, table.readUInt32BE(at + 8), table.readUInt32BE(at + 12));
      } else {
        const host = entryOffset(hi, lo);
        if (g.zeroFlag && lo & 1) push(out, pos, clusterEnd - pos, 'zero');
        else if (host === 0) {
          if (hi & COPIED) throw new CorruptedImageError(g.path, `L2 entry for guest offset ${clusterStart}: data cluster at host offset 0`);
          push(out, pos, clusterEnd - pos, 'unallocated');
        } else {
          checkDataCluster(tables, host, clusterStart);
          push(out, pos, clusterEnd - pos, 'data', host + (pos - clusterStart));
        }
      }
      pos = clusterEnd;
    }
  }
  return out;
}

function checkDataCluster(tables: ClusterTables, host: number, guest: number): void {
  const g = tables.geometry;
  if (host % g.clusterSize !== 0) throw new CorruptedImageError(g.path, `L2 entry for guest offset ${guest}: data cluster offset ${host} is not cluster-aligned`);
  if (host >= g.fileSize) throw new CorruptedImageError(g.path, `L2 entry for guest offset ${guest}: data cluster at ${host} is past the end of the file (${g.fileSize} bytes)`);
}

/** One extended L2 entry's subclusters in [pos, clusterEnd): bit n of each bitmap is subcluster n. */
function walkSubclusters(out: Segment[], tables: ClusterTables, pos: number, clusterStart: number, clusterEnd: number, hi: number, lo: number, zeroBits: number, allocBits: number): void {
  const g = tables.geometry;
  if ((allocBits & zeroBits) !== 0) {
    throw new CorruptedImageError(g.path, `L2 entry for guest offset ${clusterStart}: a subcluster is marked both allocated and zero`);
  }
  const host = entryOffset(hi, lo);
  if (allocBits !== 0) {
    if (host === 0) throw new CorruptedImageError(g.path, `L2 entry for guest offset ${clusterStart}: allocated subclusters without a host cluster`);
    checkDataCluster(tables, host, clusterStart);
  }
  while (pos < clusterEnd) {
    const sub = Math.floor((pos - clusterStart) / g.subclusterSize);
    const subEnd = Math.min(clusterEnd, clusterStart + (sub + 1) * g.subclusterSize);
    if ((allocBits >>> sub) & 1) push(out, pos, subEnd - pos, 'data', host + (pos - clusterStart));
    else if ((zeroBits >>> sub) & 1) push(out, pos, subEnd - pos, 'zero');
    else push(out, pos, subEnd - pos, 'unallocated');
    pos = subEnd;
  }
}
