/**
 * Bitmaps (spec §6): 2 bits per sector, least significant pair first. The bitmap chunk of a
 * group holds one *slice* per chunk of the group; this file works on one slice.
 *
 * - Stores: for each sector of a partly written (status 11) chunk whether it was written.
 * - States of a sector: 01 written; 00 not written; 10 never seen, read as not written;
 *   11 corrupt.
 * - Invariants: a slice only gains written sectors while its chunk keeps the same physical
 *   chunk; when every sector is written the chunk becomes status 01 and the slice is no longer
 *   consulted. A chunk that (re)enters status 11 starts from an all-zero slice.
 */
import { SectorState } from './layout.js';

const ALL_WRITTEN = 0x55;

export function sectorState(slice: Uint8Array, sector: number): number {
  return (slice[sector >>> 2] >>> ((sector & 3) * 2)) & 3;
}

export function isSectorWritten(slice: Uint8Array, sector: number): boolean {
  return sectorState(slice, sector) === SectorState.written;
}

/** Marks `count` sectors from `first` as written. */
export function markSectorsWritten(slice: Uint8Array, first: number, count: number): void {
  let s = first;
  const end = first + count;
  while (s < end && (s & 3) !== 0) setWritten(slice, s++);
  while (s + 4 <= end) {
    slice[s >>> 2] = ALL_WRITTEN;
    s += 4;
  }
  while (s < end) setWritten(slice, s++);
}

function setWritten(slice: Uint8Array, sector: number): void {
  const shift = (sector & 3) * 2;
  const i = sector >>> 2;
  slice[i] = (slice[i] & ~(3 << shift)) | (SectorState.written << shift);
}

export function isSliceFull(slice: Uint8Array): boolean {
  for (let i = 0; i < slice.length; i++) if (slice[i] !== ALL_WRITTEN) return false;
  return true;
}

/** The first sector in state 11, or -1. */
export function firstInvalidSector(slice: Uint8Array): number {
  for (let i = 0; i < slice.length; i++) {
    const pairs = slice[i] & (slice[i] >>> 1) & 0x55;
    if (pairs !== 0) {
      for (let q = 0; q < 4; q++) if ((pairs >>> (2 * q)) & 1) return 4 * i + q;
    }
  }
  return -1;
}

export interface SectorStateCounts {
  written: number;
  notWritten: number;
  reserved: number;
  invalid: number;
}

export function emptyStateCounts(): SectorStateCounts {
  return { written: 0, notWritten: 0, reserved: 0, invalid: 0 };
}

export function countSectorStates(slice: Uint8Array, into: SectorStateCounts): void {
  for (let s = 0; s < slice.length * 4; s++) {
    switch (sectorState(slice, s)) {
      case SectorState.written:
        into.written++;
        break;
      case SectorState.notWritten:
        into.notWritten++;
        break;
      case SectorState.reserved:
        into.reserved++;
        break;
      default:
        into.invalid++;
    }
  }
}
