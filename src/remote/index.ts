/**
 * Remote bases: http(s):// objects and s3://bucket/key objects, opened as read-only layers
 * that the stack cannot tell from a local base. The network code (undici, aws4) is loaded on
 * the first open only, so commands on local images do not pay for it.
 */
import type { Layer } from '../formats/layer.js';
import type { RemoteOptions } from './options.js';

export type { RemoteOptions } from './options.js';
export { RemoteSourceError } from './remote-error.js';
export { displaySource, isRemoteSource } from './source.js';

/** Opens a remote base: learns its size and version (failing with a RemoteSourceError naming it), then serves it. */
export async function openRemote(spec: string, options: RemoteOptions = {}): Promise<Layer> {
  const { openRemoteLayer } = await import('./open-remote.js');
  return openRemoteLayer(spec, options);
}
