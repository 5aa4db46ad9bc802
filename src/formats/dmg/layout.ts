/**
 * The numbers of the UDIF (.dmg) format (spec/udif.md): the `koly` trailer, the `mish` block
 * tables and their chunk types, and the limits stackbd puts on what it reads. All integers in
 * the file are big-endian; a sector is 512 bytes.
 */
export const SECTOR = 512;

export const KOLY_MAGIC = 0x6b6f6c79; // 'koly'
export const KOLY_BYTES = 512;
export const KOLY_VERSION = 4;

export const MISH_MAGIC = 0x6d697368; // 'mish'
export const MISH_VERSION = 1;
export const MISH_HEADER_BYTES = 204;
export const MISH_ENTRY_BYTES = 40;

/** Checksum type 2 is CRC-32 (zlib's); 4 is MD5, which stackbd does not verify. */
export const CHECKSUM_CRC32 = 2;
export const CHECKSUM_BYTES = 128;

/** Encrypted images: `encrcdsa` at offset 0 (version 2), `cdsaencr` ending the file (version 1). */
export const ENCRYPTED_V2_MAGIC = 'encrcdsa';
export const ENCRYPTED_V1_MAGIC = 'cdsaencr';

/** Entry types of a mish table. */
export const ChunkType = {
  ZERO: 0x00000000,
  RAW: 0x00000001,
  IGNORE: 0x00000002,
  ADC: 0x80000004,
  ZLIB: 0x80000005,
  BZIP2: 0x80000006,
  LZFSE: 0x80000007,
  XZ: 0x80000008,
  COMMENT: 0x7ffffffe,
  TERMINATOR: 0xffffffff,
} as const;

/** How stackbd names each kind of chunk that covers sectors (comments and terminators do not). */
export const CHUNK_KINDS = ['zero', 'raw', 'ignore', 'adc', 'zlib', 'bzip2', 'lzfse', 'xz'] as const;
export type ChunkKind = (typeof CHUNK_KINDS)[number];

const KIND_OF_TYPE: ReadonlyMap<number, ChunkKind> = new Map<number, ChunkKind>([
  [ChunkType.ZERO, 'zero'],
  [ChunkType.RAW, 'raw'],
  [ChunkType.IGNORE, 'ignore'],
  [ChunkType.ADC, 'adc'],
  [ChunkType.ZLIB, 'zlib'],
  [ChunkType.BZIP2, 'bzip2'],
  [ChunkType.LZFSE, 'lzfse'],
  [ChunkType.XZ, 'xz'],
]);

/** The kind of a sector-covering chunk type, or undefined for any other type. */
export function chunkKindOf(type: number): ChunkKind | undefined {
  return KIND_OF_TYPE.get(type);
}

/** The kinds whose stored bytes go through a codec. */
export type CodedKind = Exclude<ChunkKind, 'zero' | 'raw' | 'ignore'>;

export function isCompressed(kind: ChunkKind): kind is CodedKind {
  return kind !== 'zero' && kind !== 'raw' && kind !== 'ignore';
}

/**
 * Limits on what is read, so a damaged or hostile file cannot make a huge allocation:
 * - the plist (XML or binary resource fork) is read whole; 64 MiB holds the tables of a
 *   1 TiB image cut into 1 MiB chunks;
 * - a compressed chunk is decoded whole; Apple's tools write at most 1 MiB (2048 sectors),
 *   7-Zip accepts up to 256 MiB, stackbd 64 MiB.
 */
export const MAX_PLIST_BYTES = 64 * 1024 * 1024;
export const MAX_DECODED_CHUNK = 64 * 1024 * 1024;
/** A compressed chunk may be a little larger than its data (incompressible input). */
export const MAX_STORED_CHUNK = MAX_DECODED_CHUNK + 1024 * 1024;
/** Sector numbers above this would overflow byte offsets held in doubles (2^53). */
export const MAX_SECTORS = Math.floor(Number.MAX_SAFE_INTEGER / SECTOR);
