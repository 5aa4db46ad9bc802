/** `stackbd map STACK...`: which layer supplies each range, like `qemu-img map`. */
import type { Argv, CommandModule } from 'yargs';
import { AsifImage } from '../formats/asif/index.js';
import type { ImageFormat, Layer } from '../formats/layer.js';
import { checkChain, linksOf } from '../stack/chain.js';
import { Stack } from '../stack/stack.js';
import { printJson, printTable } from './print.js';
import { BACKING_OPTION, FORMAT_OPTION, imageSpecs, printWarning } from './image-args.js';
import { withLayers } from './inspect-layers.js';
import { remoteOptionsFrom, withRemoteOptions, type RemoteArgs } from './remote-options.js';

interface MapArgs extends RemoteArgs {
  images: string[];
  format?: ImageFormat;
  backing: boolean;
  json: boolean;
}

export interface MapEntry {
  offset: number;
  length: number;
  state: 'data' | 'zero' | 'absent';
  /** 1 = top layer, 2 = the one below, ...; 0 = no layer holds it (reads as zeros). */
  depth: number;
  file: string | null;
  /** Where the bytes are in `file`, for data. */
  fileOffset: number | null;
}

const STEP = 1024 ** 3;

async function mapStack(layers: Layer[]): Promise<MapEntry[]> {
  const stack = new Stack(layers, { readOnly: true });
  const out: MapEntry[] = [];
  for (let offset = 0; offset < stack.size; offset += STEP) {
    const length = Math.min(STEP, stack.size - offset);
    for (const run of await stack.extents(offset, length)) {
      const layer = run.depth > 0 ? layers[layers.length - run.depth] : null;
      if (layer instanceof AsifImage && run.state === 'data') {
        for (const piece of await layer.fileMap(run.offset, run.length)) {
          pushEntry(out, { offset: piece.offset, length: piece.length, state: piece.state, depth: run.depth, file: layer.path, fileOffset: piece.fileOffset });
        }
      } else {
        const fileOffset = layer && layer.format === 'raw' && run.state === 'data' ? run.offset : null;
        pushEntry(out, { offset: run.offset, length: run.length, state: run.state, depth: run.depth, file: layer?.path ?? null, fileOffset });
      }
    }
  }
  return out;
}

/** Appends, merging with the previous entry when it continues it exactly. */
function pushEntry(out: MapEntry[], e: MapEntry): void {
  const last = out[out.length - 1];
  if (!last || last.state !== e.state || last.depth !== e.depth || last.file !== e.file || last.offset + last.length !== e.offset) {
    out.push(e);
    return;
  }
  const contiguousInFile = last.fileOffset === null ? e.fileOffset === null : e.fileOffset === last.fileOffset + last.length;
  if (contiguousInFile) {
    last.length += e.length;
  } else out.push(e);
}

export const mapCommand: CommandModule<object, MapArgs> = {
  command: 'map <images..>',
  describe: 'show which layer holds each range of an image or stack (data, zero or absent)',
  builder: (y: Argv) =>
    withRemoteOptions(
      y
        .positional('images', { type: 'string', array: true, demandOption: true, describe: 'image, or stack bottom first' })
        .option('format', FORMAT_OPTION)
        .option('backing', BACKING_OPTION)
        .option('json', { type: 'boolean', default: false }),
    ) as unknown as Argv<MapArgs>,
  handler: async (args) => {
    const remote = await remoteOptionsFrom(args, printWarning);
    await withLayers(imageSpecs(args.images, args.format, args.backing), async (layers) => {
      // A stack that does not hold together has no map: the typed error says why (exit 1).
      if (layers.length > 1) for (const w of checkChain(await linksOf(layers), false)) printWarning(w);
      const entries = await mapStack(layers);
      if (args.json) {
        printJson(entries);
        return;
      }
      printTable([
        ['Offset', 'Length', 'State', 'Depth', 'Mapped to', 'File'],
        ...entries.map((e) => [
          `0x${e.offset.toString(16)}`,
          `0x${e.length.toString(16)}`,
          e.state,
          String(e.depth),
          e.fileOffset === null ? '-' : `0x${e.fileOffset.toString(16)}`,
          e.file ?? '-',
        ]),
      ]);
    }, remote);
  },
};
