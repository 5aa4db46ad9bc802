/**
 * The qcow2 file header (QEMU's docs/interop/qcow2.txt, "Header"): the fixed fields of
 * versions 2 and 3, read from the first bytes of the file and checked against each other and
 * against the file's size. Header extensions are read by extensions.ts, incompatible feature
 * bits judged by features.ts.
 *
 * - Stores nothing: parseHeader is a pure function of the bytes and the file size.
 * - Invariants of a header it returns: version 2 or 3; 512-byte ≤ cluster ≤ 2 MiB (QEMU's own
 *   limit); the virtual size, every offset and the L1 table fit in a JavaScript number; the L1
 *   table is cluster-aligned, inside the file, no larger than 32 MiB (QEMU's limit) and long
 *   enough for the virtual size; the backing file name, when there is one, is inside the file.
 */
import { CorruptedImageError, UnsupportedFormatError } from '../../block/errors.js';

export const QCOW2_MAGIC = 0x514649fb;
/** Enough for every fixed field of version 3 (compression_type is at byte 104). */
export const HEADER_PROBE_BYTES = 512;
const V2_HEADER_LENGTH = 72;
const V3_MIN_HEADER_LENGTH = 104;
const MIN_CLUSTER_BITS = 9;
const MAX_CLUSTER_BITS = 21;
const MAX_L1_BYTES = 32 * 1024 * 1024;
const MAX_BACKING_NAME = 1023;

export interface Qcow2Header {
  readonly version: 2 | 3;
  readonly backingFileOffset: number;
  readonly backingFileSize: number;
  readonly clusterBits: number;
  readonly clusterSize: number;
  /** Bytes, as the header says (not rounded to sectors). */
  readonly virtualSize: number;
  readonly cryptMethod: number;
  readonly l1Size: number;
  readonly l1TableOffset: number;
  readonly nbSnapshots: number;
  readonly incompatibleFeatures: bigint;
  readonly compatibleFeatures: bigint;
  readonly autoclearFeatures: bigint;
  readonly refcountOrder: number;
  readonly headerLength: number;
  /** The raw compression_type field (0 when absent). */
  readonly compressionTypeField: number;
}

/** Bit numbers of incompatible_features. */
export const Incompatible = {
  dirty: 0,
  corrupt: 1,
  externalDataFile: 2,
  compressionType: 3,
  extendedL2: 4,
} as const;

export function hasBit(mask: bigint, bit: number): boolean {
  return ((mask >> BigInt(bit)) & 1n) === 1n;
}

/** A 64-bit field as a number, refused when it cannot be one exactly. */
function u64(buf: Buffer, at: number, file: string, what: string): number {
  const value = buf.readBigUInt64BE(at);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new CorruptedImageError(file, `${what} ${value} is too large`);
  return Number(value);
}

export function parseHeader(head: Buffer, file: string, fileSize: number): Qcow2Header {
  const corrupt = (detail: string): never => {
    throw new CorruptedImageError(file, detail);
  };
  if (head.length < V2_HEADER_LENGTH) corrupt(`the file has ${fileSize} bytes, too few for a qcow2 header`);
  if (head.readUInt32BE(0) !== QCOW2_MAGIC) corrupt('no qcow2 magic (QFI\\xfb)');
  const version = head.readUInt32BE(4);
  if (version === 1) throw new UnsupportedFormatError(file, 'qcow version 1 images are not supported (convert with qemu-img convert -O qcow2)');
  if (version !== 2 && version !== 3) throw new UnsupportedFormatError(file, `qcow2 version ${version} is not supported (2 or 3)`);
  const clusterBits = head.readUInt32BE(20);
  if (clusterBits < MIN_CLUSTER_BITS) corrupt(`cluster_bits ${clusterBits} is below 9`);
  if (clusterBits > MAX_CLUSTER_BITS) throw new UnsupportedFormatError(file, `clusters of 2^${clusterBits} bytes are larger than 2 MiB`);
  const clusterSize = 2 ** clusterBits;

  let headerLength = V2_HEADER_LENGTH;
  let incompatibleFeatures = 0n;
  let compatibleFeatures = 0n;
  let autoclearFeatures = 0n;
  let refcountOrder = 4;
  let compressionTypeField = 0;
  if (version === 3) {
    if (head.length < V3_MIN_HEADER_LENGTH) corrupt(`the file has ${fileSize} bytes, too few for a version 3 header`);
    headerLength = head.readUInt32BE(100);
    if (headerLength < V3_MIN_HEADER_LENGTH || headerLength % 8 !== 0 || headerLength > Math.min(clusterSize, fileSize)) {
      corrupt(`header_length ${headerLength} is not a multiple of 8 between 104 and the cluster size`);
    }
    incompatibleFeatures = head.readBigUInt64BE(72);
    compatibleFeatures = head.readBigUInt64BE(80);
    autoclearFeatures = head.readBigUInt64BE(88);
    refcountOrder = head.readUInt32BE(96);
    // A field the header is too short to hold is absent, which means 0.
    if (headerLength > 104 && head.length > 104) compressionTypeField = head[104];
  }

  const header: Qcow2Header = {
    version,
    backingFileOffset: u64(head, 8, file, 'backing_file_offset'),
    backingFileSize: head.readUInt32BE(16),
    clusterBits,
    clusterSize,
    virtualSize: u64(head, 24, file, 'virtual size'),
    cryptMethod: head.readUInt32BE(32),
    l1Size: head.readUInt32BE(36),
    l1TableOffset: u64(head, 40, file, 'l1_table_offset'),
    nbSnapshots: head.readUInt32BE(60),
    incompatibleFeatures,
    compatibleFeatures,
    autoclearFeatures,
    refcountOrder,
    headerLength,
    compressionTypeField,
  };
  return header;
}

/** Entries in one L2 table (an extended entry is 16 bytes, a standard one 8). */
export function l2EntriesOf(h: Qcow2Header): number {
  return h.clusterSize / (hasBit(h.incompatibleFeatures, Incompatible.extendedL2) ? 16 : 8);
}

/**
 * The checks of the layout fields (L1 table, backing file name) that only make sense once the
 * feature bits were accepted (an encrypted or unknown image is refused for that first).
 */
export function checkLayout(h: Qcow2Header, file: string, fileSize: number): void {
  const corrupt = (detail: string): never => {
    throw new CorruptedImageError(file, detail);
  };
  const span = h.clusterSize * l2EntriesOf(h);
  const needed = Math.ceil(h.virtualSize / span);
  if (h.l1Size < needed) corrupt(`L1 table of ${h.l1Size} entries cannot map the virtual size ${h.virtualSize} (needs ${needed})`);
  if (h.l1Size * 8 > MAX_L1_BYTES) corrupt(`L1 table of ${h.l1Size} entries is larger than 32 MiB`);
  if (h.l1Size > 0) {
    if (h.l1TableOffset === 0 || h.l1TableOffset % h.clusterSize !== 0) corrupt(`L1 table offset ${h.l1TableOffset} is not cluster-aligned`);
    if (h.l1TableOffset + h.l1Size * 8 > fileSize) corrupt(`L1 table at ${h.l1TableOffset} (${h.l1Size} entries) ends past the end of the file (${fileSize} bytes)`);
  }
  if (h.backingFileOffset !== 0) {
    if (h.backingFileSize === 0 || h.backingFileSize > MAX_BACKING_NAME) corrupt(`backing file name of ${h.backingFileSize} bytes (1 to 1023 allowed)`);
    if (h.backingFileOffset + h.backingFileSize > fileSize) corrupt(`backing file name at ${h.backingFileOffset} ends past the end of the file`);
  }
}
