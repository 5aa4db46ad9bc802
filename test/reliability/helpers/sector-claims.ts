/**
 * Which 512-byte sectors of an area have a request in flight. Workloads that check every read
 * against a model keep requests in flight apart: one claims its sectors before it is sent and
 * releases them when it is answered (or fails).
 */
export const SECTOR = 512;

export class SectorClaims {
  private readonly busy: Uint8Array;

  constructor(bytes: number) {
    this.busy = new Uint8Array(Math.ceil(bytes / SECTOR));
  }

  /** Claims the sectors under [offset, offset + length); null when one of them is taken. */
  claim(offset: number, length: number): (() => void) | null {
    const first = Math.floor(offset / SECTOR);
    const last = Math.ceil((offset + length) / SECTOR);
    if (this.busy.subarray(first, last).some((b) => b !== 0)) return null;
    this.busy.fill(1, first, last);
    return () => void this.busy.fill(0, first, last);
  }
}
