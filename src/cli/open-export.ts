/** Opens the stack of an export and wraps it for serving (the command line and the admin API share this). */
import type { Logger } from 'pino';
import { displaySource, type RemoteOptions } from '../remote/index.js';
import type { ExportRequest } from '../server/admin-api.js';
import { Export } from '../server/export.js';
import { DiskImage } from '../stack/disk-image.js';
import { parseLayerSpec } from '../stack/layer-spec.js';
import type { SharedLayers } from '../stack/shared-layers.js';

export interface ExportDefaults {
  syncIntervalMs: number;
  log: Logger;
  /** How bases given as URLs are read (warnings go to the log). */
  remote?: RemoteOptions;
  /** Bound every cache layer's data to this many bytes, instead of the limit it records. */
  cacheLimit?: number;
  /** The server's registry of read-only layers: exports over one base share one open of it. */
  shared?: SharedLayers;
}

export async function openExport(request: ExportRequest, defaults: ExportDefaults): Promise<Export> {
  const { log } = defaults;
  const image = await DiskImage.open(request.layers.map(parseLayerSpec), {
    mode: request.readOnly ? 'readOnly' : 'readWrite',
    readOnlyWhenCacheTop: true,
    cacheLimit: defaults.cacheLimit,
    shared: defaults.shared,
    onWarning: (message) => log.warn({ export: request.name }, message),
    remote: { ...defaults.remote, onWarning: (message) => log.warn({ export: request.name }, message) },
    stack: { onCacheFillError: (err) => log.warn({ export: request.name, err }, 'cache fill failed') },
  });
  const shown = request.layers.map(displaySource);
  log.debug({ export: request.name, layers: shown, size: image.stack.size, readOnly: image.stack.readOnly }, 'export ready');
  return new Export(image.stack, {
    name: request.name,
    description: request.description ?? shown.join(' <- '),
    syncIntervalMs: defaults.syncIntervalMs,
    logger: log,
  });
}
