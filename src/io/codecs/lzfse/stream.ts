/**
 * An LZFSE stream: blocks back to back, each opened by a 4-byte magic, ending with `bvx$`
 * (format sheet §2). All blocks write one continuous output, and matches may reach into the
 * output of earlier blocks. The stream must end exactly after `bvx$` (a DMG chunk is exactly
 * one stream). Every block consumes at least 8 input bytes, so the loop ends.
 */
import { BlockMagic } from './constants.js';
import { requireInput, type StreamCursor } from './cursor.js';
import { LzfseBlockDecoder } from './lzfse-block.js';
import { lzfseFail } from './lzfse-error.js';
import { decodeLzvnBlock } from './lzvn.js';
import { decodeRawBlock } from './raw-block.js';
import { readU32 } from './read-le.js';

/** Decodes the whole stream `input` into `output`; returns the number of bytes written. */
export function decodeLzfse(input: Uint8Array, output: Uint8Array): number {
  const cursor: StreamCursor = { inPos: 0, outPos: 0 };
  // Made at the first LZFSE block: streams of raw and LZVN blocks need no tables.
  let lzfse: LzfseBlockDecoder | undefined;
  for (;;) {
    if (cursor.inPos === input.length) lzfseFail(`stream ends at byte ${cursor.inPos} without an end-of-stream block`);
    requireInput(input, cursor.inPos, 4, 'block magic');
    const magic = readU32(input, cursor.inPos);
    switch (magic) {
      case BlockMagic.END: {
        const end = cursor.inPos + 4;
        if (end !== input.length) lzfseFail(`${input.length - end} bytes follow the end-of-stream block at byte ${cursor.inPos}`);
        return cursor.outPos;
      }
      case BlockMagic.RAW:
        decodeRawBlock(input, output, cursor);
        break;
      case BlockMagic.LZVN:
        decodeLzvnBlock(input, output, cursor);
        break;
      case BlockMagic.LZFSE_V1:
      case BlockMagic.LZFSE_V2:
        lzfse ??= new LzfseBlockDecoder();
        lzfse.decode(input, output, cursor, magic === BlockMagic.LZFSE_V2);
        break;
      default:
        lzfseFail(`unknown block magic 0x${magic.toString(16).padStart(8, '0')} at byte ${cursor.inPos}`);
    }
  }
}
