/**
 * One interface for every chunk codec of the foreign formats (DMG: zlib, bzip2, LZMA/xz, ADC,
 * LZFSE; qcow2: deflate, zstd). A decoder turns one compressed chunk into the bytes it
 * declares, written into the caller's buffer; anything else (a truncated or damaged stream,
 * more output than declared) is a CodecError, which the format turns into a
 * CorruptedImageError naming the file and the chunk.
 */
export interface ChunkDecoder {
  /** How messages and `info` name the codec: 'zlib', 'bzip2', 'lzfse', ... */
  readonly name: string;
  /**
   * Decodes all of `input` into `output`, whose length is the most the chunk may decode to;
   * resolves with the number of bytes written. Rejects with CodecError on bad input.
   */
  decode(input: Uint8Array, output: Uint8Array): Promise<number>;
  /**
   * For codecs whose library makes its own output buffer: decodes all of `input` into a new
   * buffer of at most `maxLength` bytes, without the copy into a caller's buffer. Rejects as
   * `decode` does.
   */
  decodeToBuffer?(input: Uint8Array, maxLength: number): Promise<Buffer>;
}

/** The compressed bytes are not a valid stream of the codec. */
export class CodecError extends Error {
  override name = 'CodecError';
  constructor(
    readonly codec: string,
    detail: string,
  ) {
    super(`${codec}: ${detail}`);
  }
}
