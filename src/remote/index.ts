/**
 * Remote bases: http(s):// objects, s3://bucket/key objects and upstream NBD exports (nbd://,
 * nbds://, nbd+unix://), opened as read-only layers that the stack cannot tell from a local
 * base. The network code (undici, aws4, the NBD client) is loaded on the first open only, so
 * commands on local images do not pay for it.
 */
import type { Layer } from '../formats/layer.js';
import type { RemoteOptions } from './options.js';
import { isNbdSource } from './source.js';

export type { RemoteOptions } from './options.js';
export { RemoteSourceError } from './remote-error.js';
export { displaySource, isNbdSource, isRemoteSource } from './source.js';

/**
 * Opens a remote base: learns its size and version (failing with a typed ImageError naming
 * it), then serves it.
 */
export async function openRemote(spec: string, options: RemoteOptions = {}): Promise<Layer> {
  if (isNbdSource(spec)) {
    const { openNbdBase } = await import('./nbd.js');
    return openNbdBase(spec, { onWarning: options.onWarning });
  }
  const { openRemoteLayer } = await import('./open-remote.js');
  return openRemoteLayer(spec, options);
}
