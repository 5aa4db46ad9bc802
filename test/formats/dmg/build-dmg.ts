/**
 * Builds small UDIF images for tests from a list of partitions and chunks, with the encoders
 * of src/formats/dmg (mish, plist, koly): any chunk type (comments, zero fill, xz, ...), the
 * binary resource fork instead of XML, the koly at offset 0 (old images), a data start, or no
 * tables at all (a UDRW stub). Checksums are computed by the rules of spec/udif.md §5 unless
 * a test gives its own.
 */
import { crc32 } from 'node:zlib';
import { crc32Checksum, encodeKoly } from '../../../src/formats/dmg/koly.js';
import { ChunkType, KOLY_VERSION } from '../../../src/formats/dmg/layout.js';
import { encodeMish, type MishEntryOut } from '../../../src/formats/dmg/mish.js';
import { blkxPlist } from '../../../src/formats/dmg/xml-write.js';

export interface TestChunk {
  type: number;
  sectors: number;
  /** The bytes in the data fork (raw and compressed chunks). */
  stored?: Buffer;
  /** What the chunk decodes to, for the blkx checksum (raw: its stored bytes; zero fill: zeros). */
  decoded?: Buffer;
}

export interface TestPartition {
  name: string;
  id?: number;
  chunks: TestChunk[];
  /** Overrides the computed blkx CRC-32. */
  crc?: number;
}

export interface BuildOptions {
  resources?: 'xml' | 'binary' | 'none';
  kolyAtStart?: boolean;
  /** The raw disk, for resources 'none' (a stub whose data fork is the disk). */
  stub?: Buffer;
  sectorCount?: number;
  /** Changes a partition's encoded mish table before it is stored (to make broken images). */
  tamper?: (partition: number, mish: Buffer) => Buffer;
}

function blkxCrc(chunks: readonly TestChunk[]): number {
  let crc = 0;
  for (const c of chunks) {
    if (c.type === ChunkType.IGNORE || c.type === ChunkType.COMMENT) continue;
    const bytes = c.decoded ?? (c.type === ChunkType.RAW ? c.stored : c.type === ChunkType.ZERO ? Buffer.alloc(c.sectors * 512) : undefined);
    if (!bytes) throw new Error('a compressed test chunk needs `decoded` for its checksum');
    crc = crc32(bytes, crc);
  }
  return crc;
}

/** A classic Mac resource file holding `blkx` resources (spec/udif.md §3, binary form). */
export function binaryResourceFork(tables: ReadonlyArray<{ id: number; name: string; data: Buffer }>): Buffer {
  const dataArea = Buffer.concat(tables.flatMap((t) => [u32(t.data.length), t.data]));
  const names = Buffer.concat(tables.map((t) => Buffer.concat([Buffer.from([t.name.length]), Buffer.from(t.name, 'latin1')])));
  const typeList = Buffer.alloc(2 + 8);
  typeList.writeUInt16BE(0, 0); // one type
  typeList.write('blkx', 2, 'latin1');
  typeList.writeUInt16BE(tables.length - 1, 6);
  typeList.writeUInt16BE(typeList.length, 8); // references follow the type list
  const refs = Buffer.alloc(12 * tables.length);
  let dataAt = 0;
  let nameAt = 0;
  tables.forEach((t, i) => {
    refs.writeInt16BE(t.id, i * 12);
    refs.writeUInt16BE(nameAt, i * 12 + 2);
    refs.writeUIntBE(dataAt, i * 12 + 5, 3);
    dataAt += 4 + t.data.length;
    nameAt += 1 + t.name.length;
  });
  const mapHeader = Buffer.alloc(28);
  const map = Buffer.concat([mapHeader, typeList, refs, names]);
  const dataOffset = 0x100;
  const mapOffset = dataOffset + dataArea.length;
  const header = Buffer.alloc(16);
  header.writeUInt32BE(dataOffset, 0);
  header.writeUInt32BE(mapOffset, 4);
  header.writeUInt32BE(dataArea.length, 8);
  header.writeUInt32BE(map.length, 12);
  header.copy(map, 0);
  map.writeUInt16BE(28, 24); // type list offset
  map.writeUInt16BE(28 + typeList.length + refs.length, 26); // name list offset
  return Buffer.concat([header, Buffer.alloc(dataOffset - 16), dataArea, map]);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

export function buildDmg(partitions: readonly TestPartition[], options: BuildOptions = {}): Buffer {
  const base = options.kolyAtStart ? 512 : 0;
  const payloads: Buffer[] = [];
  let dataEnd = 0;
  let sector = 0;
  const tables = partitions.map((p, index) => {
    const first = sector;
    const entries: MishEntryOut[] = [];
    let rel = 0;
    for (const c of p.chunks) {
      const length = c.stored?.length ?? 0;
      entries.push({ type: c.type, sector: rel, sectors: c.sectors, offset: dataEnd, length });
      if (c.stored) payloads.push(c.stored);
      dataEnd += length;
      rel += c.sectors;
    }
    sector += rel;
    const mish = encodeMish({ firstSector: first, sectorCount: rel, bufferSectors: 0x808, descriptor: index, crc: p.crc ?? blkxCrc(p.chunks), entries, dataEnd });
    return { id: p.id ?? index - 1, name: p.name, data: options.tamper ? options.tamper(index, mish) : mish };
  });
  const dataFork = options.resources === 'none' ? (options.stub ?? Buffer.alloc(0)) : Buffer.concat(payloads);
  const resources = options.resources ?? 'xml';
  const meta =
    resources === 'xml' ? blkxPlist(tables.map((t) => ({ name: t.name, id: t.id, mish: t.data }))) : resources === 'binary' ? binaryResourceFork(tables) : Buffer.alloc(0);
  const master = Buffer.concat(tables.map((t) => t.data.subarray(72, 76)));
  const koly = encodeKoly({
    version: KOLY_VERSION,
    flags: 1,
    runningDataForkOffset: 0,
    dataForkOffset: base,
    dataForkLength: dataFork.length,
    rsrcForkOffset: resources === 'binary' ? base + dataFork.length : 0,
    rsrcForkLength: resources === 'binary' ? meta.length : 0,
    segmentNumber: 1,
    segmentCount: 1,
    segmentId: Buffer.alloc(16, 0x11),
    dataChecksum: crc32Checksum(crc32(dataFork)),
    xmlOffset: resources === 'xml' ? base + dataFork.length : 0,
    xmlLength: resources === 'xml' ? meta.length : 0,
    codeSignatureOffset: 0,
    codeSignatureLength: 0,
    masterChecksum: crc32Checksum(crc32(master)),
    variant: partitions.length === 1 ? 2 : 1,
    sectorCount: options.sectorCount ?? (resources === 'none' ? Math.ceil(dataFork.length / 512) : sector),
  });
  return options.kolyAtStart ? Buffer.concat([koly, dataFork, meta]) : Buffer.concat([dataFork, meta, koly]);
}
