/** Every failure of the LZFSE decoder is a CodecError named 'lzfse'. */
import { CodecError } from '../codec.js';

export const LZFSE_CODEC_NAME = 'lzfse';

export function lzfseFail(detail: string): never {
  throw new CodecError(LZFSE_CODEC_NAME, detail);
}
