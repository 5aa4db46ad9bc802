/**
 * What `stackbd info --json` shows of a qcow2 image's own clusters: the guest bytes per kind of
 * storage (data, compressed, zero, unallocated) over the whole disk, and for compressed
 * clusters their codec and the file bytes they take (whole 512-byte sectors, as the L2 entry
 * records them). Walks every L2 table once (through the bounded L2 cache); the backing chain is
 * not counted here (each file says its own).
 */
import { walkClusters } from './cluster-walk.js';
import { compressedSpan } from './compressed.js';
import type { CompressionType } from './features.js';
import type { ClusterTables } from './tables.js';

export interface ClusterUsage {
  data: { bytes: number };
  compressed: { bytes: number; storedBytes: number; codec: CompressionType };
  zero: { bytes: number };
  unallocated: { bytes: number };
}

/** L2 tables walked per step, so a huge image's segments are never all held at once. */
const TABLES_PER_STEP = 16;

export async function clusterUsage(tables: ClusterTables, size: number, codec: CompressionType): Promise<ClusterUsage> {
  const usage: ClusterUsage = { data: { bytes: 0 }, compressed: { bytes: 0, storedBytes: 0, codec }, zero: { bytes: 0 }, unallocated: { bytes: 0 } };
  const g = tables.geometry;
  const step = g.l2Span * TABLES_PER_STEP;
  for (let at = 0; at < size; at += step) {
    for (const s of await walkClusters(tables, at, Math.min(step, size - at))) {
      usage[s.kind].bytes += s.length;
      // A step starts on an L2 table's edge, so no compressed cluster is split between steps.
      if (s.kind === 'compressed') usage.compressed.storedBytes += compressedSpan(g, s.hi, s.lo, s.offset).length;
    }
  }
  return usage;
}
