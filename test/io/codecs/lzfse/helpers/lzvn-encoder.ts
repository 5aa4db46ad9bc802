/**
 * Test-only: an LZVN block encoder (a `bvxn` block for input[from, to), whose matches may
 * reach back before `from`), written from the opcode table of shared/spec/lzvn §4. It uses
 * every instruction kind: sml_l/lrg_l for literal runs, sml_d/med_d/lrg_d for new distances,
 * pre_d and sml_m/lrg_m for the previous distance, and optionally the two no-ops.
 */
import type { MatchFinder } from './match-finder.js';

const MAX_DISTANCE = 0xffff;
/** Longest match an sml_d/pre_d/lrg_d instruction can carry, by its literal count 0..3. */
const SHORT_MATCH_MAX = [10, 8, 6, 4] as const;

class LzvnWriter {
  readonly bytes: number[] = [];
  previousDistance = 0;

  constructor(private readonly data: Uint8Array) {}

  /** Pure literal instructions for data[from, from + n). */
  literals(from: number, n: number): void {
    while (n > 0) {
      const piece = Math.min(n, 271);
      if (piece >= 16) this.bytes.push(0xe0, piece - 16);
      else this.bytes.push(0xe0 | piece);
      this.copy(from, piece);
      from += piece;
      n -= piece;
    }
  }

  private copy(from: number, n: number): void {
    for (let i = 0; i < n; i++) this.bytes.push(this.data[from + i]);
  }

  /** Match-only instructions with the previous distance. */
  private repeat(m: number): void {
    while (m > 0) {
      const piece = Math.min(m, 271);
      if (piece >= 16) this.bytes.push(0xf0, piece - 16);
      else this.bytes.push(0xf0 | piece);
      m -= piece;
    }
  }

  /** data[from, from + l) as literals (l ≤ 3), then m bytes from `distance` back. */
  match(from: number, l: number, m: number, distance: number): void {
    const short = Math.min(m, SHORT_MATCH_MAX[l]);
    if (distance === this.previousDistance) {
      if (l === 0) return this.repeat(m);
      this.bytes.push((l << 6) | ((short - 3) << 3) | 6); // pre_d
      this.copy(from, l);
      return this.repeat(m - short);
    }
    this.previousDistance = distance;
    if (distance < 16384 && (distance >= 1536 || m > short)) {
      const medium = Math.min(m, 34);
      const mm = medium - 3;
      this.bytes.push(0xa0 | (l << 3) | (mm >> 2), ((distance & 0x3f) << 2) | (mm & 3), distance >> 6); // med_d
      this.copy(from, l);
      return this.repeat(m - medium);
    }
    if (distance < 1536) {
      this.bytes.push((l << 6) | ((short - 3) << 3) | (distance >> 8), distance & 0xff); // sml_d
    } else {
      this.bytes.push((l << 6) | ((short - 3) << 3) | 7, distance & 0xff, distance >> 8); // lrg_d
    }
    this.copy(from, l);
    this.repeat(m - short);
  }
}

/** The whole `bvxn` block (header included) for data[from, to). */
export function encodeLzvnBlock(data: Uint8Array, from: number, to: number, finder: MatchFinder, withNops = false): Uint8Array {
  const w = new LzvnWriter(data);
  if (withNops) w.bytes.push(0x0e);
  let literalStart = from;
  let i = from;
  while (i < to) {
    const found = finder.find(i, to - i, Math.min(i, MAX_DISTANCE), w.previousDistance);
    if (found === null) {
      i++;
      continue;
    }
    let l = i - literalStart;
    if (l > 3) {
      w.literals(literalStart, l - 3);
      literalStart += l - 3;
      l = 3;
    }
    w.match(literalStart, l, found.length, found.distance);
    i += found.length;
    literalStart = i;
  }
  w.literals(literalStart, to - literalStart);
  if (withNops) w.bytes.push(0x16);
  w.bytes.push(0x06, 0, 0, 0, 0, 0, 0, 0);
  const block = new Uint8Array(12 + w.bytes.length);
  const view = new DataView(block.buffer);
  view.setUint32(0, 0x6e787662, true);
  view.setUint32(4, to - from, true);
  view.setUint32(8, w.bytes.length, true);
  block.set(w.bytes, 12);
  return block;
}
