/**
 * Reading a UDIF image's structure from its file: encryption magics first (an encrypted image
 * has no readable koly, and "encrypted" is the useful answer), then the koly trailer (at the
 * end, or at offset 0 in old images), then the partition tables from the XML plist, or from
 * the binary resource fork when there is no XML. With neither, the data fork is the disk
 * itself (a UDRW stub, spec §1).
 *
 * - Invariants: the data fork, XML and resource fork ranges lie inside the file; the plist is
 *   at most MAX_PLIST_BYTES; every mish table parses (mish.ts). Nothing is decoded here.
 */
import { CorruptedImageError, UnsupportedFormatError } from '../../block/errors.js';
import type { BlockFile } from '../../io/block-file.js';
import { parseBinaryResources } from './binary-resources.js';
import { hasKolyMagic, parseKoly, type Koly } from './koly.js';
import { ENCRYPTED_V1_MAGIC, ENCRYPTED_V2_MAGIC, KOLY_BYTES, MAX_PLIST_BYTES } from './layout.js';
import { parseMish, type MishTable } from './mish.js';
import { parseXmlResources, type BlkxResource } from './xml-resources.js';

export interface Partition {
  /** Position in the plist (the order of the master checksum). */
  index: number;
  name: string;
  id: number | null;
  table: MishTable;
}

export interface DmgStructure {
  fileSize: number;
  koly: Koly;
  /** Where the koly lies: the end of the file, or offset 0 in old images. */
  kolyOffset: number;
  /** Where the partition tables came from. */
  resources: 'xml' | 'binary' | 'none';
  /** In plist order. */
  partitions: Partition[];
}

/** The message for a file whose first or last bytes carry an encryption magic, or null. */
export function encryptionOf(head: Buffer, tail: Buffer): string | null {
  if (head.subarray(0, 8).toString('latin1') === ENCRYPTED_V2_MAGIC) return 'is an encrypted disk image (encrcdsa, version 2)';
  if (tail.length >= 8 && tail.subarray(tail.length - 8).toString('latin1') === ENCRYPTED_V1_MAGIC) return 'is an encrypted disk image (cdsaencr, version 1)';
  return null;
}

async function readAt(file: BlockFile, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  await file.read(buf, offset);
  return buf;
}

export async function loadStructure(file: BlockFile): Promise<DmgStructure> {
  const path = file.path;
  const fileSize = await file.size();
  const head = await readAt(file, 0, Math.min(KOLY_BYTES, fileSize));
  const tail = await readAt(file, Math.max(0, fileSize - KOLY_BYTES), Math.min(KOLY_BYTES, fileSize));
  const encrypted = encryptionOf(head, tail);
  if (encrypted) throw new UnsupportedFormatError(path, `${encrypted}; stackbd does not read encrypted images`);
  if (fileSize < KOLY_BYTES) throw new CorruptedImageError(path, `${fileSize} bytes is too small for a UDIF image (no koly trailer)`);
  let kolyOffset = fileSize - KOLY_BYTES;
  let kolyBytes = tail;
  if (!hasKolyMagic(tail)) {
    if (!hasKolyMagic(head)) throw new CorruptedImageError(path, 'no koly trailer at the end of the file (truncated, or not a UDIF disk image)');
    kolyOffset = 0;
    kolyBytes = head;
  }
  const koly = parseKoly(kolyBytes, path);
  const inside = (what: string, offset: number, length: number): void => {
    if (offset + length > fileSize) throw new CorruptedImageError(path, `the koly puts the ${what} at ${offset}+${length}, past the end of the ${fileSize}-byte file`);
  };
  inside('data fork', koly.dataForkOffset, koly.dataForkLength);
  inside('XML plist', koly.xmlOffset, koly.xmlLength);
  inside('resource fork', koly.rsrcForkOffset, koly.rsrcForkLength);
  let resources: BlkxResource[] = [];
  let source: DmgStructure['resources'] = 'none';
  if (koly.xmlLength > 0 || koly.rsrcForkLength > 0) {
    source = koly.xmlLength > 0 ? 'xml' : 'binary';
    const [offset, length] = source === 'xml' ? [koly.xmlOffset, koly.xmlLength] : [koly.rsrcForkOffset, koly.rsrcForkLength];
    if (length > MAX_PLIST_BYTES) throw new UnsupportedFormatError(path, `the ${source === 'xml' ? 'XML plist' : 'resource fork'} is ${length} bytes; stackbd reads at most ${MAX_PLIST_BYTES}`);
    const bytes = await readAt(file, offset, length);
    resources = source === 'xml' ? parseXmlResources(bytes, path) : parseBinaryResources(bytes, path);
  }
  const partitions = resources.map((r, index) => ({ index, name: r.name, id: r.id, table: parseMish(r.data, path, `blkx ${index} "${r.name}"`) }));
  return { fileSize, koly, kolyOffset, resources: source, partitions };
}
