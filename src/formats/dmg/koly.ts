/**
 * The `koly` trailer (spec/udif.md §2): 512 bytes, normally the last of the file (old images
 * may carry it at offset 0). It says where the data fork, the XML plist and the binary resource
 * fork lie, how many sectors the disk has, and holds the data fork's and the master checksum.
 *
 * - Accepted: version 4 with header size 512 (7-Zip refuses anything else), one segment.
 * - Every u64 must fit a double exactly; ranges are checked against the file by the loader.
 */
import { CorruptedImageError, UnsupportedFormatError } from '../../block/errors.js';
import { CHECKSUM_BYTES, KOLY_BYTES, KOLY_MAGIC, KOLY_VERSION } from './layout.js';

export interface UdifChecksum {
  /** 0 none, 2 CRC-32, 4 MD5. */
  type: number;
  /** Size of the checksum in bits. */
  bits: number;
  /** 128 bytes; a CRC-32 is the big-endian u32 in the first four. */
  bytes: Buffer;
}

export interface Koly {
  version: number;
  flags: number;
  runningDataForkOffset: number;
  dataForkOffset: number;
  dataForkLength: number;
  rsrcForkOffset: number;
  rsrcForkLength: number;
  segmentNumber: number;
  segmentCount: number;
  segmentId: Buffer;
  dataChecksum: UdifChecksum;
  xmlOffset: number;
  xmlLength: number;
  codeSignatureOffset: number;
  codeSignatureLength: number;
  masterChecksum: UdifChecksum;
  /** 1 device image (with a partition map), 2 partition image. */
  variant: number;
  sectorCount: number;
}

function u64(buf: Buffer, at: number, file: string, field: string): number {
  const value = buf.readBigUInt64BE(at);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new CorruptedImageError(file, `koly ${field} ${value} is out of range`);
  return Number(value);
}

function readChecksum(buf: Buffer, at: number): UdifChecksum {
  return { type: buf.readUInt32BE(at), bits: buf.readUInt32BE(at + 4), bytes: Buffer.from(buf.subarray(at + 8, at + 8 + CHECKSUM_BYTES)) };
}

function writeChecksum(buf: Buffer, at: number, sum: UdifChecksum): void {
  buf.writeUInt32BE(sum.type, at);
  buf.writeUInt32BE(sum.bits, at + 4);
  sum.bytes.copy(buf, at + 8, 0, CHECKSUM_BYTES);
}

export function hasKolyMagic(buf: Buffer): boolean {
  return buf.length >= 4 && buf.readUInt32BE(0) === KOLY_MAGIC;
}

export function parseKoly(buf: Buffer, file: string): Koly {
  if (buf.length < KOLY_BYTES || !hasKolyMagic(buf)) throw new CorruptedImageError(file, 'no koly trailer');
  const version = buf.readUInt32BE(4);
  const headerSize = buf.readUInt32BE(8);
  if (version !== KOLY_VERSION || headerSize !== KOLY_BYTES) {
    throw new UnsupportedFormatError(file, `koly version ${version} with header size ${headerSize} is not supported (version 4, 512 bytes)`);
  }
  const koly: Koly = {
    version,
    flags: buf.readUInt32BE(12),
    runningDataForkOffset: u64(buf, 16, file, 'running data fork offset'),
    dataForkOffset: u64(buf, 24, file, 'data fork offset'),
    dataForkLength: u64(buf, 32, file, 'data fork length'),
    rsrcForkOffset: u64(buf, 40, file, 'resource fork offset'),
    rsrcForkLength: u64(buf, 48, file, 'resource fork length'),
    segmentNumber: buf.readUInt32BE(56),
    segmentCount: buf.readUInt32BE(60),
    segmentId: Buffer.from(buf.subarray(64, 80)),
    dataChecksum: readChecksum(buf, 80),
    xmlOffset: u64(buf, 216, file, 'XML offset'),
    xmlLength: u64(buf, 224, file, 'XML length'),
    codeSignatureOffset: u64(buf, 296, file, 'code signature offset'),
    codeSignatureLength: u64(buf, 304, file, 'code signature length'),
    masterChecksum: readChecksum(buf, 352),
    variant: buf.readUInt32BE(488),
    sectorCount: u64(buf, 492, file, 'sector count'),
  };
  if (koly.segmentCount > 1) {
    throw new UnsupportedFormatError(file, `segment ${koly.segmentNumber} of a ${koly.segmentCount}-segment image (.dmgpart sets) is not supported`);
  }
  return koly;
}

/** The 512 bytes of a trailer (the writer fills every field; reserved bytes stay zero). */
export function encodeKoly(k: Koly): Buffer {
  const buf = Buffer.alloc(KOLY_BYTES);
  buf.writeUInt32BE(KOLY_MAGIC, 0);
  buf.writeUInt32BE(k.version, 4);
  buf.writeUInt32BE(KOLY_BYTES, 8);
  buf.writeUInt32BE(k.flags, 12);
  buf.writeBigUInt64BE(BigInt(k.runningDataForkOffset), 16);
  buf.writeBigUInt64BE(BigInt(k.dataForkOffset), 24);
  buf.writeBigUInt64BE(BigInt(k.dataForkLength), 32);
  buf.writeBigUInt64BE(BigInt(k.rsrcForkOffset), 40);
  buf.writeBigUInt64BE(BigInt(k.rsrcForkLength), 48);
  buf.writeUInt32BE(k.segmentNumber, 56);
  buf.writeUInt32BE(k.segmentCount, 60);
  k.segmentId.copy(buf, 64, 0, 16);
  writeChecksum(buf, 80, k.dataChecksum);
  buf.writeBigUInt64BE(BigInt(k.xmlOffset), 216);
  buf.writeBigUInt64BE(BigInt(k.xmlLength), 224);
  buf.writeBigUInt64BE(BigInt(k.codeSignatureOffset), 296);
  buf.writeBigUInt64BE(BigInt(k.codeSignatureLength), 304);
  writeChecksum(buf, 352, k.masterChecksum);
  buf.writeUInt32BE(k.variant, 488);
  buf.writeBigUInt64BE(BigInt(k.sectorCount), 492);
  return buf;
}

/** A CRC-32 checksum field holding `crc`. */
export function crc32Checksum(crc: number): UdifChecksum {
  const bytes = Buffer.alloc(CHECKSUM_BYTES);
  bytes.writeUInt32BE(crc >>> 0, 0);
  return { type: 2, bits: 32, bytes };
}
