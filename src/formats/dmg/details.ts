/**
 * What `stackbd info --json` shows of a DMG beyond the Layer contract: the chunk codecs
 * (count, decoded and stored bytes per kind), the compressed size (the data fork), the
 * checksum types, the partitions, and the hdiutil format code the chunks suggest.
 */
import type { LayerDetails } from '../layer.js';
import type { ChunkTable } from './chunk-table.js';
import { CHECKSUM_CRC32, type ChunkKind } from './layout.js';
import type { DmgStructure } from './load.js';

interface KindStats {
  count: number;
  decodedBytes: number;
  storedBytes: number;
}

/** hdiutil's name for an image whose data chunks use one codec. */
const FORMAT_CODE: Readonly<Partial<Record<ChunkKind, string>>> = { raw: 'UDRO', zlib: 'UDZO', bzip2: 'UDBZ', adc: 'UDCO', lzfse: 'ULFO', xz: 'ULMO' };

function checksumName(type: number): string {
  return type === 0 ? 'none' : type === CHECKSUM_CRC32 ? 'CRC32' : type === 4 ? 'MD5' : `type ${type}`;
}

export function describeImage(s: DmgStructure, table: ChunkTable): LayerDetails {
  const chunks: Partial<Record<ChunkKind, KindStats>> = {};
  for (let i = 0; i < table.count; i++) {
    const c = table.chunk(i);
    const stats = (chunks[c.kind] ??= { count: 0, decodedBytes: 0, storedBytes: 0 });
    stats.count++;
    stats.decodedBytes += c.end - c.start;
    stats.storedBytes += c.length;
  }
  const coded = Object.keys(chunks).filter((k) => k !== 'zero' && k !== 'ignore' && k !== 'raw') as ChunkKind[];
  const code = coded.length === 1 ? FORMAT_CODE[coded[0]] : coded.length === 0 && chunks.raw ? 'UDRO' : undefined;
  return {
    udifFormat: s.resources === 'none' ? 'UDRW' : (code ?? 'mixed'),
    virtualSize: table.size,
    compressedSize: s.koly.dataForkLength,
    // The same, under the name every read-only base uses for the bytes that hold its disk.
    storedSize: s.koly.dataForkLength,
    fileSize: s.fileSize,
    variant: s.koly.variant === 1 ? 'device image' : s.koly.variant === 2 ? 'partition image' : `variant ${s.koly.variant}`,
    resourceFork: s.resources,
    chunks,
    checksums: {
      dataFork: checksumName(s.koly.dataChecksum.type),
      master: checksumName(s.koly.masterChecksum.type),
      blkx: [...new Set(s.partitions.map((p) => checksumName(p.table.checksum.type)))],
    },
    partitions: s.partitions.map((p) => ({ name: p.name, id: p.id, firstSector: p.table.firstSector, sectorCount: p.table.sectorCount })),
  };
}
