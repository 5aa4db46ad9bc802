/**
 * The XML plist the writer puts after the data fork: a `blkx` entry per partition holding its
 * mish table, laid out as hdiutil lays it out (tab indents, keys in alphabetical order, base64
 * in lines of 44 characters). dmg2img needs `<plist version="1.0">`, the Name key after Data and
 * `</plist>` within the last 20 bytes (spec/udif.md §7); 7-Zip reads any well-formed plist.
 */
const HEAD = [
  '<?xml version="1.0" encoding="UTF-8"?>',
  '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
  '<plist version="1.0">',
  '<dict>',
  '\t<key>resource-fork</key>',
  '\t<dict>',
  '\t\t<key>blkx</key>',
  '\t\t<array>',
];
const TAIL = ['\t\t</array>', '\t</dict>', '</dict>', '</plist>'];
const BASE64_LINE = 44;

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export interface PlistPartition {
  name: string;
  id: number;
  /** The partition's mish table. */
  mish: Buffer;
}

/** The plist text listing these partitions' mish tables, in order. */
export function blkxPlist(partitions: readonly PlistPartition[]): Buffer {
  const entries = partitions.flatMap((p) => {
    const b64 = p.mish.toString('base64');
    const lines: string[] = [];
    for (let i = 0; i < b64.length; i += BASE64_LINE) lines.push(`\t\t\t\t${b64.slice(i, i + BASE64_LINE)}`);
    const name = escapeXml(p.name);
    return [
      '\t\t\t<dict>',
      '\t\t\t\t<key>Attributes</key>',
      '\t\t\t\t<string>0x0050</string>',
      '\t\t\t\t<key>CFName</key>',
      `\t\t\t\t<string>${name}</string>`,
      '\t\t\t\t<key>Data</key>',
      '\t\t\t\t<data>',
      ...lines,
      '\t\t\t\t</data>',
      '\t\t\t\t<key>ID</key>',
      `\t\t\t\t<string>${p.id}</string>`,
      '\t\t\t\t<key>Name</key>',
      `\t\t\t\t<string>${name}</string>`,
      '\t\t\t</dict>',
    ];
  });
  return Buffer.from([...HEAD, ...entries, ...TAIL].join('\n') + '\n', 'utf8');
}
