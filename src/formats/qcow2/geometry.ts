/**
 * The numbers every qcow2 lookup needs, derived once from an accepted header: cluster and
 * subcluster sizes, L2 entry width and count, which flags mean what in this image's version.
 */
import { hasBit, Incompatible, l2EntriesOf, type Qcow2Header } from './header.js';

export interface Qcow2Geometry {
  /** The image file, for messages. */
  readonly path: string;
  readonly fileSize: number;
  readonly clusterBits: number;
  readonly clusterSize: number;
  /** Extended L2 entries: 16 bytes each, 32 subclusters per cluster. */
  readonly extendedL2: boolean;
  readonly l2EntryBytes: 8 | 16;
  readonly l2Entries: number;
  /** Bytes of guest disk one L2 table maps. */
  readonly l2Span: number;
  readonly subclusterSize: number;
  /** Bit 0 of a standard L2 entry means "reads as zeros" (version 3 without extended L2). */
  readonly zeroFlag: boolean;
}

export const SUBCLUSTERS = 32;

export function geometryOf(h: Qcow2Header, path: string, fileSize: number): Qcow2Geometry {
  const extendedL2 = hasBit(h.incompatibleFeatures, Incompatible.extendedL2);
  const l2Entries = l2EntriesOf(h);
  return {
    path,
    fileSize,
    clusterBits: h.clusterBits,
    clusterSize: h.clusterSize,
    extendedL2,
    l2EntryBytes: extendedL2 ? 16 : 8,
    l2Entries,
    l2Span: l2Entries * h.clusterSize,
    subclusterSize: extendedL2 ? h.clusterSize / SUBCLUSTERS : h.clusterSize,
    zeroFlag: h.version === 3 && !extendedL2,
  };
}

/** Bits 9-55 of a table entry given as its two 32-bit halves: a host offset. */
export function entryOffset(hi: number, lo: number): number {
  return (hi & 0x00ffffff) * 0x1_0000_0000 + ((lo & 0xfffffe00) >>> 0);
}
