/**
 * Writing a UDIF image (spec/udif.md §7): UDZO (zlib chunks) or UDRO (raw chunks), one
 * whole-disk partition, `dataFork ‖ XML plist ‖ koly`.
 *
 * - Input: data pieces in increasing disk order (`write`); whatever lies between them is a
 *   hole and becomes an ignore (type 2) chunk that stores nothing. Data is gathered into chunks
 *   of at most 1 MiB (2048 sectors, as hdiutil cuts them); a zlib chunk that does not shrink is
 *   stored raw. The disk is padded to whole sectors.
 * - States: writing (chunks are compressed on the pool, up to IN_FLIGHT at a time, and
 *   appended to the data fork in disk order), finished (plist and koly written, synced, closed).
 * - Invariants: the entries tile [0, sectors) in order; each entry's offset is the data fork
 *   position where its bytes begin (holes: the position at that point, length 0); the blkx
 *   CRC-32 covers the data chunks' decoded bytes in order (ignore chunks are skipped); the data
 *   fork CRC-32 covers the stored bytes; the master CRC-32 covers the blkx CRC.
 */
import { randomBytes } from 'node:crypto';
import { crc32, deflate } from 'node:zlib';
import type { BlockFile } from '../../io/block-file.js';
import { openFdFile } from '../../io/fd-file.js';
import { crc32Checksum, encodeKoly } from './koly.js';
import { ChunkType, KOLY_VERSION, SECTOR } from './layout.js';
import { encodeMish, type MishEntryOut } from './mish.js';
import { blkxPlist } from './xml-write.js';

export type DmgCompression = 'zlib' | 'raw';

export interface WriteDmgOptions {
  /** Disk size in bytes (padded up to whole sectors). */
  size: number;
  compression?: DmgCompression;
  /** Replace an existing file (refused otherwise). */
  overwrite?: boolean;
  /** The partition's name; libdmg's name for a disk without a partition map by default. */
  name?: string;
}

export const DEFAULT_PARTITION_NAME = 'whole disk (unknown partition : 0)';
/** hdiutil's chunk size: 2048 sectors. */
const CHUNK_BYTES = 1024 * 1024;
/** zlib level 1, as hdiutil's chunks (header 78 01) show. */
const ZLIB_LEVEL = 1;
/** Chunks being compressed at once. */
const IN_FLIGHT = 4;
/** hdiutil's decompress-buffer request for zlib images, and its descriptor for a whole disk. */
const ZLIB_BUFFER_SECTORS = 0x808;
const WHOLE_DISK_DESCRIPTOR = 0xfffffffe;
const FLAG_FLATTENED = 1;
const VARIANT_PARTITION_IMAGE = 2;

interface Stored {
  type: number;
  bytes: Buffer;
}

function deflateLevel(data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => deflate(data, { level: ZLIB_LEVEL }, (err, out) => (err ? reject(err) : resolve(out))));
}

async function encodeChunk(data: Buffer, compression: DmgCompression): Promise<Stored> {
  if (compression === 'raw') return { type: ChunkType.RAW, bytes: data };
  const packed = await deflateLevel(data);
  return packed.length < data.length ? { type: ChunkType.ZLIB, bytes: packed } : { type: ChunkType.RAW, bytes: data };
}

/** A table entry waiting for its place in the data fork (and, for data, its compression). */
interface Queued {
  entry: MishEntryOut;
  stored: Promise<Stored> | null;
}

export class DmgWriter {
  private stage = Buffer.allocUnsafe(CHUNK_BYTES);
  /** Disk byte where the staged data begins, and how many bytes are staged. */
  private stageStart = 0;
  private staged = 0;
  /** The entries so far tile [0, nextSector). */
  private nextSector = 0;
  private readonly entries: MishEntryOut[] = [];
  private readonly queue: Queued[] = [];
  private dataEnd = 0;
  private blkxCrc = 0;
  private forkCrc = 0;

  private constructor(
    private readonly file: BlockFile,
    private readonly sectors: number,
    private readonly compression: DmgCompression,
    private readonly name: string,
  ) {}

  static async create(path: string, options: WriteDmgOptions): Promise<DmgWriter> {
    const file = await openFdFile(path, { create: true, overwrite: options.overwrite ?? false });
    await file.truncate(0);
    return new DmgWriter(file, Math.ceil(options.size / SECTOR), options.compression ?? 'zlib', options.name ?? DEFAULT_PARTITION_NAME);
  }

  /** Adds `data` at disk byte `offset`; offsets must increase and pieces must not overlap. */
  async write(data: Buffer, offset: number): Promise<void> {
    const frontier = this.staged > 0 ? this.stageStart + this.staged : this.nextSector * SECTOR;
    if (offset < frontier || offset + data.length > this.sectors * SECTOR) {
      throw new RangeError(`DmgWriter: ${data.length} bytes at ${offset} go back before ${frontier} or past the disk`);
    }
    let pos = offset;
    let from = 0;
    while (from < data.length) {
      // A whole free sector between the staged data and this piece: close the chunk, leave a hole.
      if (this.staged > 0 && Math.floor(pos / SECTOR) > Math.ceil((this.stageStart + this.staged) / SECTOR)) await this.flushStage();
      if (this.staged === 0) {
        const sector = Math.floor(pos / SECTOR);
        this.addHole(sector);
        this.stageStart = sector * SECTOR;
      }
      const at = pos - this.stageStart;
      if (at >= CHUNK_BYTES) {
        await this.flushStage();
        continue;
      }
      if (at > this.staged) this.stage.fill(0, this.staged, at);
      const n = Math.min(data.length - from, CHUNK_BYTES - at);
      data.copy(this.stage, at, from, from + n);
      this.staged = at + n;
      from += n;
      pos += n;
      if (this.staged === CHUNK_BYTES) await this.flushStage();
    }
  }

  /** Writes the rest of the table, the plist and the koly; syncs and closes the file. */
  async finish(): Promise<void> {
    try {
      if (this.staged > 0) await this.flushStage();
      this.addHole(this.sectors);
      while (this.queue.length > 0) await this.drainOne();
      const mish = encodeMish({
        firstSector: 0,
        sectorCount: this.sectors,
        bufferSectors: this.compression === 'zlib' ? ZLIB_BUFFER_SECTORS : 0,
        descriptor: WHOLE_DISK_DESCRIPTOR,
        crc: this.blkxCrc,
        entries: this.entries,
        dataEnd: this.dataEnd,
      });
      const xml = blkxPlist([{ name: this.name, id: 0, mish }]);
      await this.file.write(xml, this.dataEnd);
      const master = Buffer.alloc(4);
      master.writeUInt32BE(this.blkxCrc >>> 0);
      const koly = encodeKoly({
        version: KOLY_VERSION,
        flags: FLAG_FLATTENED,
        runningDataForkOffset: 0,
        dataForkOffset: 0,
        dataForkLength: this.dataEnd,
        rsrcForkOffset: 0,
        rsrcForkLength: 0,
        segmentNumber: 1,
        segmentCount: 1,
        segmentId: segmentId(),
        dataChecksum: crc32Checksum(this.forkCrc),
        xmlOffset: this.dataEnd,
        xmlLength: xml.length,
        codeSignatureOffset: 0,
        codeSignatureLength: 0,
        masterChecksum: crc32Checksum(crc32(master)),
        variant: VARIANT_PARTITION_IMAGE,
        sectorCount: this.sectors,
      });
      await this.file.write(koly, this.dataEnd + xml.length);
      await this.file.sync();
    } finally {
      await this.file.close();
    }
  }

  /** Gives up: waits for the compressions under way and closes the (incomplete) file. */
  async abort(): Promise<void> {
    await Promise.allSettled(this.queue.map((q) => q.stored));
    this.queue.length = 0;
    await this.file.close();
  }

  private addHole(toSector: number): void {
    if (toSector <= this.nextSector) return;
    this.enqueue({ type: ChunkType.IGNORE, sector: this.nextSector, sectors: toSector - this.nextSector, offset: 0, length: 0 }, null);
    this.nextSector = toSector;
  }

  private async flushStage(): Promise<void> {
    const sectors = Math.ceil(this.staged / SECTOR);
    const data = this.stage.subarray(0, sectors * SECTOR);
    data.fill(0, this.staged);
    this.blkxCrc = crc32(data, this.blkxCrc);
    const sector = this.stageStart / SECTOR;
    this.enqueue({ type: ChunkType.RAW, sector, sectors, offset: 0, length: 0 }, encodeChunk(data, this.compression));
    // The chunk's buffer now belongs to its compression; stage into a new one.
    this.stage = Buffer.allocUnsafe(CHUNK_BYTES);
    this.staged = 0;
    this.nextSector = sector + sectors;
    while (this.queue.filter((q) => q.stored).length >= IN_FLIGHT) await this.drainOne();
  }

  private enqueue(entry: MishEntryOut, stored: Promise<Stored> | null): void {
    this.entries.push(entry);
    // Nothing waits on a failed compression until it is drained: keep it from being unhandled.
    stored?.catch(() => undefined);
    this.queue.push({ entry, stored });
  }

  /** Places the oldest queued entry in the data fork (after its compression, if any). */
  private async drainOne(): Promise<void> {
    const head = this.queue[0];
    head.entry.offset = this.dataEnd;
    if (head.stored) {
      const { type, bytes } = await head.stored;
      await this.file.write(bytes, this.dataEnd);
      this.forkCrc = crc32(bytes, this.forkCrc);
      head.entry.type = type;
      head.entry.length = bytes.length;
      this.dataEnd += bytes.length;
    }
    this.queue.shift();
  }
}

/** A random version 4 UUID, as hdiutil puts in the segment ID. */
function segmentId(): Buffer {
  const id = randomBytes(16);
  id[6] = (id[6] & 0x0f) | 0x40;
  id[8] = (id[8] & 0x3f) | 0x80;
  return id;
}
