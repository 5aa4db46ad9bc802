/** Opens the stack of an export and wraps it for serving (the command line and the admin API share this). */
import path from 'node:path';
import type { Logger } from 'pino';
import { displaySource, type RemoteOptions } from '../remote/index.js';
import type { ExportRequest } from '../server/admin-api.js';
import { Export } from '../server/export.js';
import { ReadRecorder } from '../server/read-recorder.js';
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
  /** Refuse qcow2 bases that name a backing file (`serve --no-backing`). */
  noBacking?: boolean;
  /** Record what clients read of each export in DIR/NAME.ranges (serve --record-reads). */
  recordReadsDir?: string;
  /** The server's registry of read-only layers: exports over one base share one open of it. */
  shared?: SharedLayers;
}

/** The file an export's reads are recorded in: its name made safe for a file name ("" is "default"). */
export function recordFileName(exportName: string): string {
  return `${exportName === '' ? 'default' : encodeURIComponent(exportName).replace(/^\./, '%2E')}.ranges`;
}

/** An export to open; `noBacking` (the config file's base object) adds to the defaults' refusal. */
export async function openExport(request: ExportRequest & { noBacking?: boolean }, defaults: ExportDefaults): Promise<Export> {
  const { log } = defaults;
  const image = await DiskImage.open(request.layers.map(parseLayerSpec), {
    mode: request.readOnly ? 'readOnly' : 'readWrite',
    readOnlyWhenCacheTop: true,
    cacheLimit: defaults.cacheLimit,
    noBacking: request.noBacking === true || defaults.noBacking === true,
    shared: defaults.shared,
    onWarning: (message) => log.warn({ export: request.name }, message),
    remote: { ...defaults.remote, onWarning: (message) => log.warn({ export: request.name }, message) },
    stack: { onCacheFillError: (err) => log.warn({ export: request.name, err }, 'cache fill failed') },
  });
  const shown = request.layers.map(displaySource);
  log.debug({ export: request.name, layers: shown, size: image.stack.size, readOnly: image.stack.readOnly }, 'export ready');
  let readRecorder: ReadRecorder | undefined;
  if (defaults.recordReadsDir !== undefined) {
    readRecorder = new ReadRecorder(path.join(defaults.recordReadsDir, recordFileName(request.name)), request.name, image.stack.size, log);
    await readRecorder.load();
  }
  return new Export(image.stack, {
    name: request.name,
    description: request.description ?? shown.join(' <- '),
    syncIntervalMs: defaults.syncIntervalMs,
    logger: log,
    ...(readRecorder ? { readRecorder } : {}),
  });
}
