/**
 * An LZVN block (`bvxn`): a 12-byte header (magic, u32 n_raw_bytes, u32 n_payload_bytes) and a
 * payload of byte-aligned instructions (format sheet §4).
 *
 * Each instruction carries L literal bytes (which follow its own bytes), a match length M and
 * possibly a new distance D; instructions without a distance reuse the previous one, which
 * starts undefined (0) at every block. The block is good only if it ends with the 8-byte
 * end-of-stream instruction exactly at the payload end and produced exactly n_raw_bytes.
 * Every instruction consumes at least one payload byte, so the loop ends.
 */
import { BlockLimit } from './constants.js';
import { blockOutputEnd, requireInput, type StreamCursor } from './cursor.js';
import { lzfseFail } from './lzfse-error.js';
import { copyLiterals, copyMatch } from './match-copy.js';
import { readU32 } from './read-le.js';

const EOS_SIZE = 8;

export function decodeLzvnBlock(input: Uint8Array, output: Uint8Array, cursor: StreamCursor): void {
  const start = cursor.inPos;
  requireInput(input, start, BlockLimit.LZVN_HEADER_SIZE, 'LZVN block header');
  const nRaw = readU32(input, start + 4);
  const nPayload = readU32(input, start + 8);
  requireInput(input, start, BlockLimit.LZVN_HEADER_SIZE + nPayload, 'LZVN block');
  const outEnd = blockOutputEnd(output, cursor, nRaw);
  const end = start + BlockLimit.LZVN_HEADER_SIZE + nPayload;
  const at = `LZVN block at byte ${start}`;

  let p = start + BlockLimit.LZVN_HEADER_SIZE;
  let o = cursor.outPos;
  let distance = 0;
  for (;;) {
    if (p >= end) lzfseFail(`${at}: payload ends without end-of-stream`);
    const b0 = input[p];
    // Instruction size without literals, L, M, and whether it sets a new distance.
    let size: number;
    let litLen = 0;
    let matchLen = 0;
    let newDistance = -1;
    if (b0 >= 0xe0) {
      if (b0 === 0xe0) {
        size = 2; // lrg_l
        if (p + size > end) lzfseFail(`${at}: instruction cut at byte ${p}`);
        litLen = input[p + 1] + 16;
      } else if (b0 < 0xf0) {
        size = 1; // sml_l
        litLen = b0 & 15;
      } else if (b0 === 0xf0) {
        size = 2; // lrg_m
        if (p + size > end) lzfseFail(`${at}: instruction cut at byte ${p}`);
        matchLen = input[p + 1] + 16;
      } else {
        size = 1; // sml_m
        matchLen = b0 & 15;
      }
    } else if (b0 >= 0xa0 && b0 < 0xc0) {
      size = 3; // med_d
      if (p + size > end) lzfseFail(`${at}: instruction cut at byte ${p}`);
      const b1 = input[p + 1];
      litLen = (b0 >>> 3) & 3;
      matchLen = (((b0 & 7) << 2) | (b1 & 3)) + 3;
      newDistance = (b1 >>> 2) | (input[p + 2] << 6);
    } else if ((b0 >= 0x70 && b0 < 0x80) || (b0 >= 0xd0 && b0 < 0xe0)) {
      lzfseFail(`${at}: undefined opcode 0x${b0.toString(16)} at byte ${p}`);
    } else {
      litLen = b0 >>> 6;
      matchLen = ((b0 >>> 3) & 7) + 3;
      const kind = b0 & 7;
      if (kind === 6) {
        if (litLen === 0) {
          // The L = 0 forms of pre_d: end-of-stream, two no-ops, the rest undefined.
          if (b0 === 0x06) {
            if (p + EOS_SIZE !== end) lzfseFail(`${at}: end-of-stream at byte ${p} is not at the payload end`);
            if (o !== outEnd) lzfseFail(`${at}: produced ${o - cursor.outPos} of its ${nRaw} bytes`);
            cursor.inPos = end;
            cursor.outPos = o;
            return;
          }
          if (b0 === 0x0e || b0 === 0x16) {
            p += 1;
            continue;
          }
          lzfseFail(`${at}: undefined opcode 0x${b0.toString(16)} at byte ${p}`);
        }
        size = 1; // pre_d
      } else if (kind === 7) {
        size = 3; // lrg_d
        if (p + size > end) lzfseFail(`${at}: instruction cut at byte ${p}`);
        newDistance = input[p + 1] | (input[p + 2] << 8);
      } else {
        size = 2; // sml_d
        if (p + size > end) lzfseFail(`${at}: instruction cut at byte ${p}`);
        newDistance = (kind << 8) | input[p + 1];
      }
    }
    p += size;
    if (litLen > 0) {
      if (litLen > end - p) lzfseFail(`${at}: literals at byte ${p} run past the payload`);
      if (litLen > outEnd - o) lzfseFail(`${at}: literals write past the block's declared size`);
      copyLiterals(output, o, input, p, litLen);
      p += litLen;
      o += litLen;
    }
    if (matchLen > 0) {
      if (newDistance >= 0) distance = newDistance;
      if (distance === 0 || distance > o) lzfseFail(`${at}: match distance ${distance} at output byte ${o} is invalid`);
      if (matchLen > outEnd - o) lzfseFail(`${at}: match writes past the block's declared size`);
      copyMatch(output, o, distance, matchLen);
      o += matchLen;
    }
  }
}
