/**
 * The table of formats (registry.ts says what an entry is). Order matters only in that RAW,
 * which has no magic, is what is left when no entry detects the file.
 */
import { openAsif } from './asif/index.js';
import { looksLikeDmg } from './dmg/detect.js';
import { openDmg } from './dmg/index.js';
import { openQcow2 } from './qcow2/index.js';
import { openRaw } from './raw.js';
import { openSparseBundle } from './sparsebundle/index.js';
import { startsWith, type FormatEntry, type ProbeInput } from './registry.js';

const QCOW_MAGIC = Buffer.from([0x51, 0x46, 0x49, 0xfb]);

export const FORMAT_TABLE: readonly FormatEntry[] = [
  {
    name: 'asif',
    label: 'ASIF',
    extensions: ['.asif'],
    detect: (p) => startsWith(p.head, 'shdw'),
    open: (path, o) => openAsif(path, { readOnly: o.readOnly, requireLock: o.requireLock, cacheLimit: o.cacheLimit }),
  },
  {
    name: 'qcow2',
    label: 'qcow2',
    extensions: ['.qcow2', '.qcow'],
    detect: (p) => startsWith(p.head, QCOW_MAGIC),
    // Always read-only: a qcow2 image is a base, written only through an overlay above it.
    open: (path, o) => openQcow2(path, { noBacking: o.noBacking }),
  },
  { name: 'vhdx', label: 'VHDX', extensions: ['.vhdx'], detect: (p) => startsWith(p.head, 'vhdxfile') },
  {
    name: 'vmdk',
    label: 'VMDK',
    extensions: ['.vmdk'],
    detect: (p) => startsWith(p.head, 'KDMV') || startsWith(p.head, '# Disk DescriptorFile'),
  },
  {
    // A directory: Info.plist (or its backup Info.bckup) and bands/.
    name: 'sparsebundle',
    label: 'sparse bundle',
    extensions: ['.sparsebundle'],
    detect: (p) => p.entries !== null && (p.entries.includes('Info.plist') || p.entries.includes('Info.bckup')) && p.entries.includes('bands'),
    open: (path) => openSparseBundle(path),
  },
  // A DMG (UDIF) file ends with a 512-byte `koly` trailer (old ones start with it); encrypted ones are recognised to be refused.
  { name: 'dmg', label: 'DMG (UDIF)', extensions: ['.dmg'], detect: (p) => looksLikeDmg(p.head, p.tail), open: (path) => openDmg(path) },
];

/** The name of the format whose magic is in these first bytes of a disk, or null (RAW). */
export function magicIn(head: Buffer): string | null {
  const input: ProbeInput = { path: '', size: head.length, head, tail: Buffer.alloc(0), entries: null };
  return FORMAT_TABLE.find((f) => f.detect(input))?.label ?? null;
}

/** RAW: what a file is when nothing else matches. */
export const RAW_ENTRY: FormatEntry = {
  name: 'raw',
  label: 'RAW',
  extensions: ['.raw'],
  detect: (p) => p.entries === null,
  open: (path, o) => openRaw(path, { readOnly: o.readOnly, requireLock: o.requireLock, headGuard: o.probed ? magicIn : undefined }),
};
