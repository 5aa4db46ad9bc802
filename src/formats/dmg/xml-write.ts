/**
 * The XML plist the writer puts after the data fork: one `blkx` entry holding the mish table,
 * laid out as hdiutil lays it out (tab indents, keys in alphabetical order, base64 in lines of
 * 44 characters). dmg2img needs `<plist version="1.0">`, the Name key after Data and
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

/** The plist text for one whole-disk partition named `name` whose mish table is `mish`. */
export function blkxPlist(name: string, mish: Buffer): Buffer {
  const b64 = mish.toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += BASE64_LINE) lines.push(`\t\t\t\t${b64.slice(i, i + BASE64_LINE)}`);
  const n = escapeXml(name);
  const entry = [
    '\t\t\t<dict>',
    '\t\t\t\t<key>Attributes</key>',
    '\t\t\t\t<string>0x0050</string>',
    '\t\t\t\t<key>CFName</key>',
    `\t\t\t\t<string>${n}</string>`,
    '\t\t\t\t<key>Data</key>',
    '\t\t\t\t<data>',
    ...lines,
    '\t\t\t\t</data>',
    '\t\t\t\t<key>ID</key>',
    '\t\t\t\t<string>0</string>',
    '\t\t\t\t<key>Name</key>',
    `\t\t\t\t<string>${n}</string>`,
    '\t\t\t</dict>',
  ];
  return Buffer.from([...HEAD, ...entry, ...TAIL].join('\n') + '\n', 'utf8');
}
