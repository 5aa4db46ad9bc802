/**
 * stackbd as a library: DiskImageKit-style images and stacks, the NBD server, and an NBD client.
 */
export { DiskImage, type AppendSpec, type BlockSize, type CreateOptions, type LayerInfo, type OpenMode, type OpenOptions } from './stack/disk-image.js';
export { Stack, type DepthRun, type StackOptions } from './stack/stack.js';
export { checkChain } from './stack/chain.js';
export { convertStack, type ConvertOptions } from './stack/convert.js';
export { commitTop, type CommitOptions, type CommitResult } from './stack/commit.js';
export {
  CorruptedImageError,
  ImageError,
  IncompatibleStackingError,
  InvalidBlockCountError,
  RequestError,
  StackbdError,
  UnsupportedFormatError,
} from './block/errors.js';
export type { Run, RunState } from './block/runs.js';
export type { ImageFormat, Layer, LayerType } from './formats/layer.js';
export { createImage, openImage } from './formats/open-image.js';
export { probeFormat } from './formats/probe.js';
export { AsifImage, checkAsif, createAsif, openAsif, type AsifCheckReport } from './formats/asif/index.js';
export { RawImage, createRaw, openRaw } from './formats/raw.js';
export { Export, type ExportOptions } from './server/export.js';
export { NbdServer, type ServerOptions } from './server/server.js';
export { NbdClient, NbdOptionError, NbdRequestError, type ClientOptions } from './nbd/client.js';
export { parseNbdUri, type NbdTarget } from './nbd/uri.js';
