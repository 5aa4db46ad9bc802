/**
 * How commands name images: positional paths, bottom first, each optionally prefixed with its
 * format (`raw:disk.img`), and `-f FORMAT` for the first (the base) as qemu-img's `-f`. Layers
 * above the base are ASIF, whatever they are named; a format is never guessed into RAW for a
 * file whose name promises another format (see src/formats/probe.ts).
 */
import type { Options } from 'yargs';
import type { ImageFormat } from '../formats/layer.js';
import { IMAGE_FORMATS, parseLayerSpec, type LayerSpec } from '../stack/layer-spec.js';
import { UsageError } from './usage-error.js';

export const FORMAT_OPTION: Options = {
  alias: 'f',
  choices: IMAGE_FORMATS,
  describe: 'format of the first image (the base), instead of probing; other layers take a FORMAT: prefix, e.g. raw:disk.img',
};

/** `--backing` (true) / `--no-backing`: whether a qcow2 base's backing chain is opened. */
export const BACKING_OPTION: Options = {
  type: 'boolean',
  default: true,
  describe: "open a qcow2 base's backing files (--no-backing: refuse a qcow2 image that names one, and never open another file)",
};

/** `backing` false (`--no-backing`): every spec refuses a qcow2 backing file. */
export function imageSpecs(images: readonly string[], format?: ImageFormat, backing = true): LayerSpec[] {
  const specs = images.map(parseLayerSpec).map((s) => (backing ? s : { ...s, noBacking: true }));
  if (format && specs.length > 0) {
    const first = specs[0];
    if (first.format && first.format !== format) {
      throw new UsageError(`-f ${format} and the prefix of ${images[0]} name two different formats`);
    }
    specs[0] = { ...first, format };
  }
  return specs;
}

/** A warning on stderr: the command goes on. */
export function printWarning(message: string): void {
  process.stderr.write(`stackbd: warning: ${message}\n`);
}
