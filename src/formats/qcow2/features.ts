/**
 * Which qcow2 images stackbd reads, decided from the header's feature bits and extensions
 * before anything else is trusted. Everything refused is refused by name:
 * - encryption (crypt_method 1 AES or 2 LUKS, or a full disk encryption header) and an
 *   external data file: UnsupportedFormatError (the data is not, or not only, in this file);
 * - the corrupt bit (incompatible bit 1): CorruptedImageError, since QEMU found the metadata
 *   inconsistent and it must be repaired (qemu-img check -r all) before it can be trusted;
 * - incompatible bits stackbd does not know (5-63): UnsupportedFormatError naming the bit and,
 *   when the image's feature name table has it, its name;
 * - an extended-L2 image with clusters under 16 KiB, a compression type bit without a known
 *   type (or a type without the bit): CorruptedImageError or UnsupportedFormatError.
 * Accepted: the dirty bit (refcounts may be stale; reading needs no refcounts), compatible and
 * autoclear bits (bitmaps are ignored), internal snapshots (only the active layer is read).
 */
import { CorruptedImageError, UnsupportedFormatError } from '../../block/errors.js';
import type { HeaderExtensions } from './extensions.js';
import { hasBit, Incompatible, type Qcow2Header } from './header.js';

export type CompressionType = 'deflate' | 'zstd';

/** Incompatible bits this reader understands. */
const KNOWN_INCOMPATIBLE = (1n << 5n) - 1n;
const CRYPT_METHODS: Readonly<Record<number, string>> = { 1: 'AES', 2: 'LUKS' };
const EXTENDED_L2_MIN_CLUSTER_BITS = 14;

/** Throws unless stackbd can read the image; returns its compression type. */
export function checkFeatures(h: Qcow2Header, ext: HeaderExtensions, file: string): CompressionType {
  if (h.cryptMethod !== 0) {
    const method = CRYPT_METHODS[h.cryptMethod] ?? `method ${h.cryptMethod}`;
    throw new UnsupportedFormatError(file, `the qcow2 image is encrypted (${method}); decrypt it first (qemu-img convert with --object secret)`);
  }
  if (ext.fullDiskEncryption) throw new UnsupportedFormatError(file, 'the qcow2 image has a full disk encryption header; encrypted images are not supported');
  const unknown = h.incompatibleFeatures & ~KNOWN_INCOMPATIBLE;
  if (unknown !== 0n) {
    const bit = unknown.toString(2).length - 1;
    const named = ext.featureNames.find((f) => f.kind === 'incompatible' && f.bit === bit);
    throw new UnsupportedFormatError(file, `unknown qcow2 incompatible feature bit ${bit}${named ? ` (${named.name})` : ''}`);
  }
  if (hasBit(h.incompatibleFeatures, Incompatible.corrupt)) {
    throw new CorruptedImageError(file, 'the qcow2 image is marked corrupt (incompatible bit 1); repair it with qemu-img check -r all');
  }
  if (hasBit(h.incompatibleFeatures, Incompatible.externalDataFile) || ext.externalDataFile !== null) {
    const name = ext.externalDataFile ? ` (${ext.externalDataFile})` : '';
    throw new UnsupportedFormatError(file, `the qcow2 image keeps its data in an external data file${name}, which is not supported`);
  }
  if (hasBit(h.incompatibleFeatures, Incompatible.extendedL2) && h.clusterBits < EXTENDED_L2_MIN_CLUSTER_BITS) {
    throw new CorruptedImageError(file, `extended L2 entries need clusters of at least 16 KiB (cluster_bits ${h.clusterBits})`);
  }
  const typeBit = hasBit(h.incompatibleFeatures, Incompatible.compressionType);
  if (!typeBit) {
    if (h.compressionTypeField !== 0) throw new CorruptedImageError(file, `compression_type ${h.compressionTypeField} without the compression type feature bit`);
    return 'deflate';
  }
  if (h.compressionTypeField === 1) return 'zstd';
  if (h.compressionTypeField === 0) throw new CorruptedImageError(file, 'the compression type feature bit is set but compression_type is 0');
  throw new UnsupportedFormatError(file, `qcow2 compression type ${h.compressionTypeField} is not supported (deflate or zstd)`);
}
