/**
 * One LZFSE block (`bvx1` or `bvx2`): header | literal payload | L/M/D payload (format sheet
 * §5, §8, §10).
 *
 * All literals of the block are decoded first (four interleaved FSE states on one backward bit
 * stream) into a scratch array; then n_matches triples (L, M, D) are decoded from the second
 * stream and run: append L literals, then M bytes copied from D bytes back. D = 0 repeats the
 * previous distance of this block. Every triple is checked before it writes: a defined D no
 * further back than the start of the whole output, literals that exist, output inside the
 * block's n_raw_bytes. The block must produce exactly n_raw_bytes.
 *
 * The decoder object owns its scratch (tables, literal buffer, bit reader) and reuses it for
 * every block of a stream, so decoding a block allocates only its small header object.
 */
import { BackwardBitReader } from './bit-stream.js';
import { FrequencyOffset, parseV1Header, parseV2Header } from './block-header.js';
import { Alphabet, BlockLimit, D_BASE, D_EXTRA_BITS, L_BASE, L_EXTRA_BITS, M_BASE, M_EXTRA_BITS } from './constants.js';
import { blockOutputEnd, type StreamCursor } from './cursor.js';
import { buildLiteralTable, decodeLiterals, FseValueDecoder } from './fse.js';
import { lzfseFail } from './lzfse-error.js';
import { copyLiterals, copyMatch } from './match-copy.js';

export class LzfseBlockDecoder {
  private readonly freq = new Uint16Array(Alphabet.FREQUENCY_COUNT);
  private readonly literalTable = new Int32Array(Alphabet.LITERAL_STATES);
  private readonly literalStates = new Int32Array(4);
  private readonly literals = new Uint8Array(BlockLimit.LITERALS);
  private readonly reader = new BackwardBitReader();
  private readonly l = new FseValueDecoder(Alphabet.L_STATES, L_EXTRA_BITS, L_BASE, 'L');
  private readonly m = new FseValueDecoder(Alphabet.M_STATES, M_EXTRA_BITS, M_BASE, 'M');
  private readonly d = new FseValueDecoder(Alphabet.D_STATES, D_EXTRA_BITS, D_BASE, 'D');

  /** Decodes the block at cursor.inPos; `v2` tells a `bvx2` header from a `bvx1` one. */
  decode(input: Uint8Array, output: Uint8Array, cursor: StreamCursor, v2: boolean): void {
    const start = cursor.inPos;
    const { freq, reader } = this;
    const h = v2 ? parseV2Header(input, start, freq) : parseV1Header(input, start, freq);
    const outEnd = blockOutputEnd(output, cursor, h.nRawBytes);

    const literalStart = start + h.headerSize;
    const lmdStart = literalStart + h.nLiteralPayloadBytes;
    const blockEnd = lmdStart + h.nLmdPayloadBytes;

    buildLiteralTable(freq.subarray(FrequencyOffset.LITERAL, FrequencyOffset.LITERAL + Alphabet.LITERAL_SYMBOLS), this.literalTable);
    this.literalStates.set(h.literalStates);
    reader.init(input, literalStart, lmdStart, h.literalBits, 'literal');
    decodeLiterals(this.literalTable, this.literalStates, reader, this.literals, h.nLiterals);

    this.l.reset(freq.subarray(FrequencyOffset.L, FrequencyOffset.M), h.lState);
    this.m.reset(freq.subarray(FrequencyOffset.M, FrequencyOffset.D), h.mState);
    this.d.reset(freq.subarray(FrequencyOffset.D, FrequencyOffset.LITERAL), h.dState);
    reader.init(input, lmdStart, blockEnd, h.lmdBits, 'L/M/D');
    cursor.outPos = this.runTriples(output, cursor.outPos, outEnd, h.nMatches, h.nLiterals);
    if (cursor.outPos !== outEnd) {
      lzfseFail(`LZFSE block at byte ${start} produced ${cursor.outPos - (outEnd - h.nRawBytes)} of its ${h.nRawBytes} bytes`);
    }
    cursor.inPos = blockEnd;
  }

  private runTriples(output: Uint8Array, outPos: number, outEnd: number, nMatches: number, nLiterals: number): number {
    const { reader, l, m, d, literals } = this;
    let pos = outPos;
    let literalPos = 0;
    let prevD = 0; // 0 = no distance yet in this block
    for (let t = 0; t < nMatches; t++) {
      const litLen = l.decode(reader);
      const matchLen = m.decode(reader);
      const dValue = d.decode(reader);
      const distance = dValue !== 0 ? dValue : prevD;
      prevD = distance;
      if (distance === 0) lzfseFail(`triple ${t} repeats a distance before any was given`);
      if (distance > pos + litLen) lzfseFail(`triple ${t}: distance ${distance} reaches before the start of the output`);
      if (litLen > nLiterals - literalPos) lzfseFail(`triple ${t} uses more literals than the block has`);
      if (litLen + matchLen > outEnd - pos) lzfseFail(`triple ${t} writes past the block's declared size`);
      copyLiterals(output, pos, literals, literalPos, litLen);
      literalPos += litLen;
      pos += litLen;
      copyMatch(output, pos, distance, matchLen);
      pos += matchLen;
    }
    return pos;
  }
}
