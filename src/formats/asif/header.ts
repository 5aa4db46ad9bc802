/**
 * The ASIF header: the first 512 bytes of the file (spec §2), big-endian.
 *
 * - Stores: magic, version, sizes, the two directory offsets, the image GUID (our layer UUID),
 *   the sector count, the capacity, the chunk and block sizes, the metadata chunk's logical
 *   index, and at 0x50 our parent UUID (spec §10). Flags and unknown bytes are kept as read.
 * - States: decoded (raw values, u64 as bigint) → validated (numbers, with the geometry).
 * - Invariants: an image is only ever written by patching the 512 bytes it was read from, so
 *   fields we do not understand survive every update; a validated header always yields a
 *   geometry whose sizes are exact numbers.
 */
import {
  ASIF_MAGIC,
  ASIF_VERSION,
  HEADER_BYTES,
  MAX_CHUNK_SIZE,
  deriveGeometry,
  type Geometry,
} from './layout.js';
import { hex, type ProblemSink } from './problems.js';

const At = {
  magic: 0x00,
  version: 0x04,
  headerSize: 0x08,
  flags: 0x0c,
  directoryA: 0x10,
  directoryB: 0x18,
  guid: 0x20,
  sectorCount: 0x30,
  maxSectorCount: 0x38,
  chunkSize: 0x40,
  blockSize: 0x44,
  segmentCount: 0x46,
  metadataChunk: 0x48,
  parentUUID: 0x50,
} as const;

const MIN_HEADER_SIZE = 0x50;
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** The fields as stored, before any rule is applied. */
export interface RawHeader {
  readonly bytes: Buffer;
  readonly magic: number;
  readonly version: number;
  readonly headerSize: number;
  readonly directoryOffsets: readonly [bigint, bigint];
  readonly sectorCount: bigint;
  readonly maxSectorCount: bigint;
  readonly chunkSize: number;
  readonly blockSize: number;
  readonly segmentCount: number;
  readonly metadataChunk: bigint;
}

/** A header that passed every rule: all values are exact numbers. */
export interface AsifHeader {
  /** The 512 bytes as read (or as last written); updates patch a copy of them. */
  readonly bytes: Buffer;
  readonly geometry: Geometry;
  readonly sectorCount: number;
  readonly directoryOffsets: readonly [number, number];
  readonly metadataChunk: number;
  /** Physical chunks below this one hold the header and the directories. */
  readonly firstDataChunk: number;
}

export function decodeHeader(buf: Buffer): RawHeader {
  const bytes = Buffer.from(buf.subarray(0, HEADER_BYTES));
  return {
    bytes,
    magic: bytes.readUInt32BE(At.magic),
    version: bytes.readUInt32BE(At.version),
    headerSize: bytes.readUInt32BE(At.headerSize),
    directoryOffsets: [bytes.readBigUInt64BE(At.directoryA), bytes.readBigUInt64BE(At.directoryB)],
    sectorCount: bytes.readBigUInt64BE(At.sectorCount),
    maxSectorCount: bytes.readBigUInt64BE(At.maxSectorCount),
    chunkSize: bytes.readUInt32BE(At.chunkSize),
    blockSize: bytes.readUInt16BE(At.blockSize),
    segmentCount: bytes.readUInt16BE(At.segmentCount),
    metadataChunk: bytes.readBigUInt64BE(At.metadataChunk),
  };
}

/**
 * Applies the rules of spec §2 against a file of `fileSize` bytes. Returns null when the
 * header is too broken to go on (the sink has been told why).
 */
export function validateHeader(raw: RawHeader, fileSize: number, sink: ProblemSink): AsifHeader | null {
  if (raw.magic !== ASIF_MAGIC) {
    sink.unsupported(`not an ASIF image: magic at 0x00 is ${hex(raw.magic)}, expected 0x73686477 ('shdw')`);
    return null;
  }
  if (raw.version !== ASIF_VERSION) {
    sink.unsupported(`header: ASIF version ${raw.version} at 0x04 is not supported (only version 1)`);
    return null;
  }
  const { blockSize, chunkSize } = raw;
  if (blockSize === 0 || blockSize % 512 !== 0) {
    sink.corrupt(`header: block size ${blockSize} at 0x44 is not a non-zero multiple of 512`);
    return null;
  }
  if (chunkSize === 0 || chunkSize % blockSize !== 0) {
    sink.corrupt(`header: chunk size ${hex(chunkSize)} at 0x40 is not a non-zero multiple of the block size ${blockSize}`);
    return null;
  }
  if (raw.segmentCount !== 0) {
    sink.unsupported(`header: segment count ${raw.segmentCount} at 0x46 (segmented images are not supported)`);
    return null;
  }
  let usable = true;
  if (raw.headerSize < MIN_HEADER_SIZE || raw.headerSize > chunkSize) {
    sink.corrupt(`header: header size ${hex(raw.headerSize)} at 0x08 is outside ${hex(MIN_HEADER_SIZE)}..${hex(chunkSize)}`);
    usable = false;
  }
  if (chunkSize > MAX_CHUNK_SIZE || (chunkSize / blockSize) % 4 !== 0 || chunkSize < 8 * (4 * blockSize + 1)) {
    sink.unsupported(`header: chunk size ${hex(chunkSize)} with block size ${blockSize} is not supported by this engine`);
    return null;
  }
  const capacityBytes = raw.maxSectorCount * BigInt(blockSize);
  if (raw.maxSectorCount === 0n) {
    sink.corrupt('header: the capacity (max sector count at 0x38) is zero');
    return null;
  }
  if (capacityBytes > SAFE) {
    sink.unsupported(`header: capacity of ${raw.maxSectorCount} sectors at 0x38 is not supported`);
    return null;
  }
  const geometry = deriveGeometry(blockSize, chunkSize, Number(raw.maxSectorCount));
  if (raw.sectorCount > raw.maxSectorCount) {
    sink.corrupt(`header: sector count ${raw.sectorCount} at 0x30 exceeds the capacity of ${raw.maxSectorCount} sectors`);
    return null;
  }
  const sectorCount = Number(raw.sectorCount);
  if (raw.metadataChunk >= BigInt(geometry.capacityChunks)) {
    sink.corrupt(`header: metadata chunk ${raw.metadataChunk} at 0x48 lies beyond the capacity of ${geometry.capacityChunks} chunks`);
    return null;
  }
  const metadataChunk = Number(raw.metadataChunk);
  if (sectorCount * blockSize > metadataChunk * chunkSize) {
    sink.corrupt(`header: the device (${sectorCount} sectors) overlaps the metadata chunk ${metadataChunk}`);
    usable = false;
  }
  const offsets = checkDirectoryOffsets(raw, geometry, fileSize, sink);
  if (!offsets || !usable) return null;
  return {
    bytes: raw.bytes,
    geometry,
    sectorCount,
    directoryOffsets: offsets,
    metadataChunk,
    firstDataChunk: Math.ceil((Math.max(offsets[0], offsets[1]) + geometry.directoryBytes) / chunkSize),
  };
}

function checkDirectoryOffsets(
  raw: RawHeader,
  geo: Geometry,
  fileSize: number,
  sink: ProblemSink,
): [number, number] | null {
  const size = BigInt(geo.directoryBytes);
  const names = ['A', 'B'] as const;
  let ok = true;
  raw.directoryOffsets.forEach((offset, i) => {
    const where = `header: directory ${names[i]} at ${hex(offset)} (field ${hex(At.directoryA + 8 * i)})`;
    if (offset < BigInt(raw.headerSize)) {
      sink.corrupt(`${where} lies inside the header`);
      ok = false;
    } else if (offset + size > BigInt(fileSize)) {
      sink.corrupt(`${where} with ${geo.directoryBytes} bytes runs past the end of the file (${fileSize} bytes)`);
      ok = false;
    }
  });
  if (!ok) return null;
  const [a, b] = raw.directoryOffsets.map(Number) as [number, number];
  if (Math.abs(a - b) < geo.directoryBytes) {
    sink.corrupt(`header: directories A (${hex(a)}) and B (${hex(b)}) overlap (${geo.directoryBytes} bytes each)`);
    return null;
  }
  return [a, b];
}

/** Everything a new header holds. */
export interface NewHeader {
  readonly geometry: Geometry;
  readonly sectorCount: number;
  readonly directoryOffsets: readonly [number, number];
  readonly metadataChunk: number;
  readonly guid: Uint8Array;
  /** 16 bytes, or all zero for a standalone image. */
  readonly parentUUID: Uint8Array;
}

export function encodeHeader(h: NewHeader): Buffer {
  const b = Buffer.alloc(HEADER_BYTES);
  b.writeUInt32BE(ASIF_MAGIC, At.magic);
  b.writeUInt32BE(ASIF_VERSION, At.version);
  b.writeUInt32BE(HEADER_BYTES, At.headerSize);
  b.writeBigUInt64BE(BigInt(h.directoryOffsets[0]), At.directoryA);
  b.writeBigUInt64BE(BigInt(h.directoryOffsets[1]), At.directoryB);
  b.set(h.guid, At.guid);
  b.writeBigUInt64BE(BigInt(h.sectorCount), At.sectorCount);
  b.writeBigUInt64BE(BigInt(h.geometry.maxSectorCount), At.maxSectorCount);
  b.writeUInt32BE(h.geometry.chunkSize, At.chunkSize);
  b.writeUInt16BE(h.geometry.blockSize, At.blockSize);
  b.writeBigUInt64BE(BigInt(h.metadataChunk), At.metadataChunk);
  b.set(h.parentUUID, At.parentUUID);
  return b;
}

/** A copy of `bytes` with a new image GUID. */
export function withGuid(bytes: Buffer, guid: Uint8Array): Buffer {
  const b = Buffer.from(bytes);
  b.set(guid, At.guid);
  return b;
}

/** A copy of `bytes` with a new sector count. */
export function withSectorCount(bytes: Buffer, sectorCount: number): Buffer {
  const b = Buffer.from(bytes);
  b.writeBigUInt64BE(BigInt(sectorCount), At.sectorCount);
  return b;
}

/** A copy of `bytes` with a new parent UUID (null: all zero, no ASIF parent). */
export function withParentUUID(bytes: Buffer, parent: Uint8Array | null): Buffer {
  const b = Buffer.from(bytes);
  b.fill(0, At.parentUUID, At.parentUUID + 16);
  if (parent) b.set(parent, At.parentUUID);
  return b;
}

export function headerGuid(bytes: Buffer): string {
  return uuidToString(bytes.subarray(At.guid, At.guid + 16));
}

/** The parent UUID at 0x50, or null when the 16 bytes are all zero (a standalone image). */
export function headerParentUUID(bytes: Buffer): string | null {
  const raw = bytes.subarray(At.parentUUID, At.parentUUID + 16);
  return raw.every((x) => x === 0) ? null : uuidToString(raw);
}

/** Lowercase 8-4-4-4-12 hex of any 16 bytes (no version check: a GUID read from disk is what it is). */
export function uuidToString(raw: Uint8Array): string {
  const h = Buffer.from(raw).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

const UUID_TEXT = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The 16 bytes of a UUID string, or null when the string is not 8-4-4-4-12 hex. */
export function uuidToBytes(text: string): Uint8Array | null {
  return UUID_TEXT.test(text) ? Uint8Array.from(Buffer.from(text.replaceAll('-', ''), 'hex')) : null;
}

/** Byte offsets of the fields tests and tools mask or patch. */
export const HEADER_FIELDS = At;
