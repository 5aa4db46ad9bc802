/** Round trips and known values of the ASIF codecs (layout, header, directory, table, bitmap, metadata). */
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import {
  countSectorStates,
  emptyStateCounts,
  firstInvalidSector,
  isSectorWritten,
  isSliceFull,
  markSectorsWritten,
  sectorState,
} from '../../../src/formats/asif/bitmap.js';
import { activeCopy, decodeDirectory, encodeDirectory, readU64, writeU64 } from '../../../src/formats/asif/directory.js';
import {
  decodeHeader,
  encodeHeader,
  headerGuid,
  headerParentUUID,
  uuidToBytes,
  uuidToString,
  validateHeader,
  withGuid,
  withSectorCount,
} from '../../../src/formats/asif/header.js';
import { STANDARD_LAYOUT, deriveGeometry, maxBlockCount, placeDirectories } from '../../../src/formats/asif/layout.js';
import { decodeMetadata, encodeMetadata } from '../../../src/formats/asif/metadata.js';
import { CollectingSink } from '../../../src/formats/asif/problems.js';
import { addressOf, bitmapChunkAt, entryChunk, entryReserved, entryStatus, writeBitmapChunk, writeEntry } from '../../../src/formats/asif/table.js';

describe('geometry', () => {
  it('matches spec §3 at 512-byte blocks', () => {
    const g = deriveGeometry(512, STANDARD_LAYOUT[512].chunkSize, STANDARD_LAYOUT[512].maxSectorCount);
    expect(g).toMatchObject({
      entriesPerGroup: 2048,
      groupBytes: 16392,
      groupsPerTable: 63,
      tableSpan: 126 * 2 ** 30,
      directoryEntries: 33289,
      directoryBytes: 266320,
      sliceBytes: 512,
      capacityChunks: 2 ** 32,
    });
    expect(placeDirectories(g)).toEqual({ offsets: [0x200, 0x41400], firstDataChunk: 1 });
    expect(maxBlockCount(g, 0xffffffff)).toBe(0xffffffff * 2048);
  });

  it('uses 1 MiB chunks and 2^40 sectors at 4096-byte blocks', () => {
    const g = deriveGeometry(4096, STANDARD_LAYOUT[4096].chunkSize, STANDARD_LAYOUT[4096].maxSectorCount);
    expect(g).toMatchObject({ entriesPerGroup: 16384, groupsPerTable: 7, directoryEntries: 37450, sliceBytes: 64, capacityChunks: 2 ** 32 });
    expect(placeDirectories(g)).toEqual({ offsets: [0x1000, 0x1000 + 0x4a000], firstDataChunk: 1 });
  });

  it('finds the metadata chunk of Apple files where the fixtures keep it', () => {
    const g = deriveGeometry(512, 0x100000, 2 ** 43);
    const a = addressOf(g, 0xffffffff);
    expect(a).toEqual({ table: 33288, entryOffset: 0x20030, group: 7, bitmapEntryOffset: 0x20038, sliceOffset: 0xffe00 });
  });
});

describe('header', () => {
  const geometry = deriveGeometry(512, 0x100000, 2 ** 43);
  const guid = uuidToBytes('d9c2082c-983f-4877-9e66-32960451150d') as Uint8Array;
  const parent = uuidToBytes('01234567-89ab-cdef-0123-456789abcdef') as Uint8Array;
  const bytes = encodeHeader({ geometry, sectorCount: 19531250, directoryOffsets: [0x200, 0x41400], metadataChunk: 0xffffffff, guid, parentUUID: parent });

  it('encodes and validates back to the same values', () => {
    const sink = new CollectingSink();
    const h = validateHeader(decodeHeader(bytes), 4 * 2 ** 20, sink);
    expect(sink.errors).toEqual([]);
    expect(h).toMatchObject({ sectorCount: 19531250, directoryOffsets: [0x200, 0x41400], metadataChunk: 0xffffffff, firstDataChunk: 1 });
    expect(headerGuid(bytes)).toBe('d9c2082c-983f-4877-9e66-32960451150d');
    expect(headerParentUUID(bytes)).toBe('01234567-89ab-cdef-0123-456789abcdef');
    expect(bytes.subarray(0, 4).toString('latin1')).toBe('shdw');
  });

  it('patches only the field asked for', () => {
    const g2 = uuidToBytes('ffffffff-0000-4000-8000-000000000001') as Uint8Array;
    const a = withGuid(bytes, g2);
    const b = withSectorCount(bytes, 42);
    expect(headerGuid(a)).toBe('ffffffff-0000-4000-8000-000000000001');
    expect(Buffer.compare(a.subarray(0x30), bytes.subarray(0x30))).toBe(0);
    expect(decodeHeader(b).sectorCount).toBe(42n);
    expect(Buffer.compare(b.subarray(0, 0x30), bytes.subarray(0, 0x30))).toBe(0);
    expect(decodeHeader(bytes).sectorCount).toBe(19531250n);
  });

  it('reads an all-zero parent field as no parent', () => {
    expect(headerParentUUID(Buffer.alloc(512))).toBeNull();
  });

  it('converts UUIDs both ways and refuses what is not one', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (raw) => {
        expect(Buffer.from(uuidToBytes(uuidToString(raw)) as Uint8Array).equals(Buffer.from(raw))).toBe(true);
      }),
    );
    expect(uuidToBytes('not-a-uuid')).toBeNull();
    expect(uuidToBytes('01234567-89ab-cdef-0123-456789abcdeg')).toBeNull();
  });
});

describe('directory', () => {
  it('round trips and picks the higher sequence', () => {
    const tables = new Float64Array(40);
    tables[0] = 5;
    tables[39] = 2 ** 40 + 3;
    const buf = encodeDirectory(7n, tables);
    expect(buf.length).toBe(8 + 8 * 40);
    const d = decodeDirectory(buf, 40);
    expect(d.sequence).toBe(7n);
    expect([...d.tables]).toEqual([...tables]);
    expect(activeCopy(0n, 1n)).toBe(1);
    expect(activeCopy(9n, 3n)).toBe(0);
    expect(activeCopy(4n, 4n)).toBeNull();
  });

  it('keeps every u64 below 2^53 exact', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (n) => {
        const b = Buffer.alloc(8);
        writeU64(b, 0, n);
        expect(readU64(b, 0)).toBe(n);
        expect(b.readBigUInt64BE(0)).toBe(BigInt(n));
      }),
    );
  });
});

describe('table entries', () => {
  it('round trip status and chunk, leaving reserved bits zero', () => {
    fc.assert(
      fc.property(fc.constantFrom(0, 1, 2, 3), fc.integer({ min: 0, max: 2 ** 53 - 1 }), (status, chunk) => {
        const t = Buffer.alloc(16);
        writeEntry(t, 8, status as 0 | 1 | 2 | 3, chunk);
        expect(entryStatus(t, 8)).toBe(status);
        expect(entryChunk(t, 8)).toBe(chunk);
        expect(entryReserved(t, 8)).toBe(0);
        expect(t.readBigUInt64BE(8)).toBe((BigInt(status) << 62n) | BigInt(chunk));
      }),
    );
  });

  it('decodes the metadata entry of Apple fixtures', () => {
    const t = Buffer.from('c0000000000000020000000000000003', 'hex');
    expect(entryStatus(t, 0)).toBe(0b11);
    expect(entryChunk(t, 0)).toBe(2);
    expect(bitmapChunkAt(t, 8)).toBe(3);
    writeBitmapChunk(t, 8, 9);
    expect(bitmapChunkAt(t, 8)).toBe(9);
  });

  it('sees reserved bits', () => {
    const t = Buffer.alloc(8);
    t.writeUInt32BE(0x40800000, 0);
    expect(entryReserved(t, 0)).toBe(1);
    expect(entryStatus(t, 0)).toBe(1);
  });
});

describe('bitmaps', () => {
  it('marks runs of sectors exactly, least significant pair first', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 63 }), fc.integer({ min: 1, max: 64 }), (first, count) => {
        const slice = new Uint8Array(16);
        const n = Math.min(count, 64 - first);
        markSectorsWritten(slice, first, n);
        for (let s = 0; s < 64; s++) expect(isSectorWritten(slice, s)).toBe(s >= first && s < first + n);
        expect(isSliceFull(slice)).toBe(first === 0 && n === 64);
      }),
    );
    const apple = new Uint8Array(512);
    markSectorsWritten(apple, 0, 2);
    expect(apple[0]).toBe(0x05);
  });

  it('treats 10 as not written, finds 11 and counts states', () => {
    const slice = Uint8Array.from([0b11_10_01_00, 0x55]);
    expect(sectorState(slice, 0)).toBe(0);
    expect(isSectorWritten(slice, 1)).toBe(true);
    expect(isSectorWritten(slice, 2)).toBe(false);
    expect(firstInvalidSector(slice)).toBe(3);
    expect(firstInvalidSector(Uint8Array.from([0x55, 0xaa]))).toBe(-1);
    const counts = emptyStateCounts();
    countSectorStates(slice, counts);
    expect(counts).toEqual({ written: 5, notWritten: 1, reserved: 1, invalid: 1 });
  });
});

describe('metadata chunk', () => {
  it("writes Apple's exact text for a standalone image", () => {
    const bytes = encodeMetadata({ stableUUID: '47d4f646-0893-411d-8138-550ad7227273', layerType: null });
    expect(bytes.subarray(0, 20).toString('hex')).toBe('6d6574610000000100000200000000000000' + '0200');
    expect(bytes.subarray(0x200).toString('utf8')).toBe(
      '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n<plist version="1.0">\n<dict>\n\t<key>internal metadata</key>\n\t<dict>\n\t\t<key>stable uuid</key>\n\t\t<string>47d4f646-0893-411d-8138-550ad7227273</string>\n\t</dict>\n\t<key>user metadata</key>\n\t<dict/>\n</dict>\n</plist>\n',
    );
  });

  it.each(['cache', 'overlay', null] as const)('round trips layer type %s', (layerType) => {
    const bytes = Buffer.concat([encodeMetadata({ stableUUID: 'ab', layerType }), Buffer.alloc(100)]);
    const sink = new CollectingSink();
    const meta = decodeMetadata(bytes, 'meta', sink);
    expect(sink.errors).toEqual([]);
    expect(meta?.stableUUID).toBe('ab');
    expect(meta?.layerType).toBe(layerType);
    expect(meta?.plist['user metadata']).toEqual({});
  });

  it('reports a missing magic, a broken plist, a missing stable uuid and an unknown layer type', () => {
    const good = encodeMetadata({ stableUUID: 'x', layerType: 'cache' });
    const cases: Array<[Buffer, RegExp]> = [
      [Buffer.concat([Buffer.from('nope'), good.subarray(4)]), /no 'meta' header/],
      [Buffer.concat([good.subarray(0, 0x200), Buffer.from('<plist><dict><key>a')]), /not well-formed XML \(element <key> is not closed\)/],
      [Buffer.concat([good.subarray(0, 0x200), Buffer.from('<plist><dict><key>a</key><key>b</key></dict></plist>')]), /does not parse/],
      [Buffer.concat([good.subarray(0, 0x200), Buffer.from([0x3c, 0x70, 0xff, 0x3e])]), /not valid UTF-8/],
      [Buffer.concat([good.subarray(0, 0x200), Buffer.from(good.subarray(0x200).toString().replace('stable uuid', 'other'))]), /stable uuid/],
      [Buffer.concat([good.subarray(0, 0x200), Buffer.from(good.subarray(0x200).toString().replace('>cache<', '>mirror<'))]), /unknown layer type/],
    ];
    // The XML parser inside the plist package would print its complaints: nothing may reach it.
    const printed = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      for (const [bytes, message] of cases) {
        const sink = new CollectingSink();
        expect(decodeMetadata(bytes, 'meta', sink)).toBeNull();
        expect(sink.errors.join('\n')).toMatch(message);
      }
      expect(printed).not.toHaveBeenCalled();
    } finally {
      printed.mockRestore();
    }
  });
});
