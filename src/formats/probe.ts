/**
 * Which format a file holds, by its magic numbers. ASIF is recognised by `shdw` at byte 0;
 * formats stackbd does not read (yet) are recognised too and refused by name, so that a qcow2
 * or VMDK file is never served as if its bytes were a raw disk. Anything else is RAW: a raw
 * disk has no magic of its own.
 */
import { UnsupportedFormatError } from '../block/errors.js';
import { openFdFile } from '../io/fd-file.js';

const PROBE_BYTES = 512;

/** Magic strings at byte 0 of formats we refuse. */
const FOREIGN_HEADS = [
  { magic: Buffer.from([0x51, 0x46, 0x49, 0xfb]), name: 'qcow2' },
  { magic: Buffer.from('vhdxfile', 'latin1'), name: 'VHDX' },
  { magic: Buffer.from('KDMV', 'latin1'), name: 'VMDK' },
  { magic: Buffer.from('# Disk DescriptorFile', 'latin1'), name: 'VMDK (descriptor)' },
] as const;

const ASIF_MAGIC = Buffer.from('shdw', 'latin1');
/** A DMG (UDIF) file ends with a 512-byte `koly` trailer. */
const DMG_TRAILER = Buffer.from('koly', 'latin1');

export async function probeFormat(path: string): Promise<'asif' | 'raw'> {
  const file = await openFdFile(path, { readOnly: true });
  try {
    const size = await file.size();
    const head = Buffer.alloc(Math.min(PROBE_BYTES, size));
    await file.read(head, 0);
    if (startsWith(head, ASIF_MAGIC)) return 'asif';
    for (const { magic, name } of FOREIGN_HEADS) {
      if (startsWith(head, magic)) throw new UnsupportedFormatError(path, `this is a ${name} image, which stackbd does not read`);
    }
    if (size >= PROBE_BYTES) {
      const tail = Buffer.alloc(PROBE_BYTES);
      await file.read(tail, size - PROBE_BYTES);
      if (startsWith(tail, DMG_TRAILER)) throw new UnsupportedFormatError(path, 'this is a DMG (UDIF) image, which stackbd does not read');
    }
    return 'raw';
  } finally {
    await file.close();
  }
}

function startsWith(buf: Buffer, magic: Buffer): boolean {
  return buf.length >= magic.length && buf.subarray(0, magic.length).equals(magic);
}
