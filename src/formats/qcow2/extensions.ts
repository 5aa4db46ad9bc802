/**
 * qcow2 header extensions ("Header extensions" in QEMU's qcow2.txt): type/length records
 * right after the header, up to an end marker (type 0) or the end of the first cluster.
 *
 * - Read: the backing file format name, the feature name table (to name unknown feature bits
 *   in messages), and the presence of the external data file name, the full disk encryption
 *   pointer and the bitmaps directory. Unknown types are skipped, as the format allows.
 * - Invariant: every record lies inside the area given; one that runs past it is corruption.
 */
import { CorruptedImageError } from '../../block/errors.js';

export const ExtensionType = {
  end: 0x00000000,
  backingFormat: 0xe2792aca,
  featureNames: 0x6803f857,
  bitmaps: 0x23852875,
  fullDiskEncryption: 0x0537be77,
  externalDataFile: 0x44415441,
} as const;

/** Which feature bitmap a feature name table entry names a bit of. */
export type FeatureKind = 'incompatible' | 'compatible' | 'autoclear';
const FEATURE_KINDS: readonly FeatureKind[] = ['incompatible', 'compatible', 'autoclear'];
const FEATURE_ENTRY_BYTES = 48;

export interface FeatureName {
  readonly kind: FeatureKind;
  readonly bit: number;
  readonly name: string;
}

export interface HeaderExtensions {
  readonly backingFormat: string | null;
  readonly featureNames: readonly FeatureName[];
  readonly externalDataFile: string | null;
  readonly fullDiskEncryption: boolean;
  readonly bitmaps: boolean;
}

function text(bytes: Buffer): string {
  const nul = bytes.indexOf(0);
  return (nul < 0 ? bytes : bytes.subarray(0, nul)).toString('utf8');
}

/** Reads the extensions found in `area` (the bytes from the end of the header to the end of the first cluster). */
export function parseExtensions(area: Buffer, file: string, areaOffset: number): HeaderExtensions {
  let backingFormat: string | null = null;
  let externalDataFile: string | null = null;
  let fullDiskEncryption = false;
  let bitmaps = false;
  const featureNames: FeatureName[] = [];
  let at = 0;
  while (at + 8 <= area.length) {
    const type = area.readUInt32BE(at);
    if (type === ExtensionType.end) break;
    const length = area.readUInt32BE(at + 4);
    const data = at + 8;
    if (length > area.length - data) {
      throw new CorruptedImageError(file, `header extension 0x${type.toString(16).padStart(8, '0')} at byte ${areaOffset + at} (${length} bytes) runs past the first cluster`);
    }
    const body = area.subarray(data, data + length);
    switch (type) {
      case ExtensionType.backingFormat:
        backingFormat = text(body);
        break;
      case ExtensionType.externalDataFile:
        externalDataFile = text(body);
        break;
      case ExtensionType.fullDiskEncryption:
        fullDiskEncryption = true;
        break;
      case ExtensionType.bitmaps:
        bitmaps = true;
        break;
      case ExtensionType.featureNames:
        for (let e = 0; e + FEATURE_ENTRY_BYTES <= body.length; e += FEATURE_ENTRY_BYTES) {
          const kind = FEATURE_KINDS[body[e]];
          if (kind) featureNames.push({ kind, bit: body[e + 1], name: text(body.subarray(e + 2, e + FEATURE_ENTRY_BYTES)) });
        }
        break;
      default:
        break;
    }
    at = data + Math.ceil(length / 8) * 8;
  }
  return { backingFormat, featureNames, externalDataFile, fullDiskEncryption, bitmaps };
}
