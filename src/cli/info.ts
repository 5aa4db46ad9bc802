/** `stackbd info STACK...`: every layer's properties and whether the chain is valid. */
import type { Argv, CommandModule } from 'yargs';
import type { ImageFormat } from '../formats/layer.js';
import { BACKING_OPTION, FORMAT_OPTION, imageSpecs, printWarning } from './image-args.js';
import { chainReport, describeOpenLayer, withLayers, type LayerReport } from './inspect-layers.js';
import { detailFields } from './detail-fields.js';
import { printFields, printJson } from './print.js';
import { remoteOptionsFrom, withRemoteOptions, type RemoteArgs } from './remote-options.js';
import { formatSize } from './size.js';

interface InfoArgs extends RemoteArgs {
  images: string[];
  format?: ImageFormat;
  backing: boolean;
  json: boolean;
}

function showPin(pin: Readonly<Record<string, string | number>>): string {
  return Object.entries(pin)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
}

/** A format's details without the sizes the common fields above already show. */
function notShownYet(details: Readonly<Record<string, unknown>>, r: LayerReport): Record<string, unknown> {
  const rest: Record<string, unknown> = { ...details };
  if (rest.virtualSize === r.virtualSize) delete rest.virtualSize;
  if (rest.fileSize === r.fileSize) delete rest.fileSize;
  return rest;
}

function fieldsOf(r: LayerReport): Array<[string, string]> {
  const fields: Array<[string, string]> = [
    ['file', r.path],
    ['format', r.format.toUpperCase()],
    ['virtual size', `${formatSize(r.virtualSize)} (${r.virtualSize} bytes)`],
    ['block size', String(r.blockSize)],
    ['sector count', String(r.blockCount)],
  ];
  if (r.chunkSize !== undefined) fields.push(['chunk size', String(r.chunkSize)]);
  if (r.allocatedBytes !== undefined) fields.push(['allocated', `${formatSize(r.allocatedBytes)} (${r.allocatedBytes} bytes)`]);
  fields.push(['file size', `${formatSize(r.fileSize)} (${r.fileSize} bytes)`]);
  fields.push(['layer type', r.layerType ?? 'none (standalone or base)']);
  fields.push(['layer UUID', r.layerUUID ?? '-']);
  fields.push(['parent UUID', r.parentUUID ?? '-']);
  if (r.parentPin) fields.push(['parent pin', showPin(r.parentPin)]);
  if (r.pin) fields.push(['identity', showPin(r.pin)]);
  if (r.stableUUID !== undefined) fields.push(['stable uuid', r.stableUUID]);
  if (r.details) fields.push(...detailFields(notShownYet(r.details, r)));
  if (r.format === 'http' || r.format === 's3') fields.push(['pinned by', remotePin(r.details ?? {})]);
  return fields;
}

function remotePin(d: Readonly<Record<string, unknown>>): string {
  if (typeof d.etag === 'string') return `ETag ${d.etag}`;
  if (typeof d.lastModified === 'string') return `Last-Modified ${d.lastModified}`;
  return 'nothing: the server gives no strong ETag and no Last-Modified, so the base cannot be pinned (a replaced object would not be noticed)';
}

export const infoCommand: CommandModule<object, InfoArgs> = {
  command: 'info <images..>',
  describe: 'show an image, or every layer of a stack (bottom first) and whether they stack (exit 1 when they do not)',
  builder: (y: Argv) =>
    withRemoteOptions(
      y
        .positional('images', { type: 'string', array: true, demandOption: true, describe: 'image, or stack bottom first' })
        .option('format', FORMAT_OPTION)
        .option('backing', BACKING_OPTION)
        .option('json', { type: 'boolean', default: false }),
    ) as unknown as Argv<InfoArgs>,
  handler: async (args) => {
    const remote = await remoteOptionsFrom(args, printWarning);
    await withLayers(imageSpecs(args.images, args.format, args.backing), async (layers) => {
      const reports = await Promise.all(layers.map(describeOpenLayer));
      const { problem, warnings } = layers.length > 1 ? await chainReport(layers) : { problem: null, warnings: [] };
      const top = layers[layers.length - 1];
      if (problem) process.exitCode = 1;
      if (args.json) {
        printJson({
          virtualSize: top.size,
          layers: reports,
          chain: layers.length > 1 ? { valid: problem === null, ...(problem ? { error: problem } : {}), warnings } : undefined,
        });
        return;
      }
      for (const w of warnings) printWarning(w);
      reports.forEach((r, i) => {
        if (layers.length > 1) console.log(`${i === 0 ? 'base' : i === layers.length - 1 ? 'top' : 'layer'} ${i + 1} of ${layers.length}:`);
        printFields(fieldsOf(r));
        if (i < reports.length - 1) console.log('');
      });
      if (layers.length > 1) {
        console.log('');
        console.log(problem ? `chain: INVALID: ${problem}` : `chain: valid (${formatSize(top.size)} seen by clients)`);
      }
    }, remote);
  },
};
