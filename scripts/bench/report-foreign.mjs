// @ts-check
/**
 * The "Foreign bases" section of the bench report (issue 12): the runs of the workloads
 * scripts/bench/foreign.sh adds, each stackbd figure beside its peer's, with the ratio of
 * medians. Returns no lines when none of those workloads ran.
 */

/** @typedef {{ server: string, workload: string, value: number, unit: string, wall: number, cpu: number | null, hwmKiB: number | null, clientCpu?: number | null, note?: string }} Row */

const PAIRS = [
  {
    workload: 'dmg-read',
    title: '1 GiB UDZO DMG read whole',
    ours: 'stackbd-dmg',
    oursHow: 'stack (DMG base + empty ASIF overlay) read by `nbdcopy … null:`',
    peer: '7zz-x',
    peerHow: '`7zz x -tdmg -so disk.dmg > /dev/null`',
  },
  {
    workload: 'qcow2-rand-read-qd32',
    title: 'qcow2 base, rand read 4 KiB, QD 32',
    ours: 'stackbd-qcow2',
    oursHow: 'stack (qcow2 base + empty ASIF overlay), fio',
    peer: 'qemu-nbd-r-qcow2',
    peerHow: '`qemu-nbd -r -f qcow2` on the same qcow2, fio',
  },
  {
    workload: 'qcow2-seq-read',
    title: 'qcow2 base, seq read 1 MiB, QD 8',
    ours: 'stackbd-qcow2',
    oursHow: 'stack (qcow2 base + empty ASIF overlay), fio',
    peer: 'qemu-nbd-r-qcow2',
    peerHow: '`qemu-nbd -r -f qcow2` on the same qcow2, fio',
  },
];

/** @param {number[]} xs */
function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return NaN;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/** @param {number} v @param {string} unit */
function fmt(v, unit) {
  if (!Number.isFinite(v)) return '–';
  if (unit === 'IOPS') return Math.round(v).toLocaleString('en-US');
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

/**
 * @param {Row[]} rows every run of the bench
 * @returns {string[]} the section's markdown lines
 */
export function foreignSection(rows) {
  /** @param {string} server @param {string} workload */
  const runs = (server, workload) => rows.filter((r) => r.server === server && r.workload === workload);
  const present = PAIRS.filter((p) => runs(p.ours, p.workload).length > 0 || runs(p.peer, p.workload).length > 0);
  if (present.length === 0) return [];
  /** @param {Row[]} g */
  const summary = (g) => {
    if (g.length === 0) return null;
    const cpu = g.filter((r) => r.cpu !== null && r.cpu !== undefined);
    const hwm = g.filter((r) => r.hwmKiB !== null && r.hwmKiB !== undefined);
    return {
      n: g.length,
      unit: g[0].unit,
      value: median(g.map((r) => r.value)),
      wall: median(g.map((r) => r.wall)),
      cpuPct: cpu.length ? median(cpu.map((r) => (100 * /** @type {number} */ (r.cpu)) / r.wall)) : null,
      clientPct: median(g.map((r) => (100 * (r.clientCpu ?? 0)) / r.wall)),
      hwmMiB: hwm.length ? median(hwm.map((r) => /** @type {number} */ (r.hwmKiB) / 1024)) : null,
      note: g[0].note,
    };
  };
  const out = [];
  out.push('## Foreign bases (issue 12)');
  out.push('');
  for (const p of present) out.push(`- ${p.title}: stackbd = ${p.oursHow}; peer = ${p.peerHow}.`);
  out.push('- The DMG is `stackbd convert` of a 1 GiB disk whose every fourth MiB is random and the rest compressible text (UDZO: zlib chunks of 1 MiB); both readers are checked once to give its bytes (sha256). MiB/s of virtual size (1 GiB / wall time). 7-Zip has no server: its CPU is the client column.');
  out.push('- The qcow2 is `qemu-img convert -O qcow2` of the 1 GiB all-random `base.raw` (64 KiB clusters, every cluster allocated); fio as in the main table (`--ioengine=nbd`, time-based).');
  out.push('- A fresh empty ASIF overlay is appended for every stackbd run (`stackbd append BASE --new overlay.asif --type overlay`): reads pass through it to the base, as they do for a user\'s stack.');
  out.push('');
  out.push('| workload | unit | stackbd | peer | stackbd / peer | stackbd server CPU · peak RSS | peer server CPU · peak RSS | client CPU stackbd · peer |');
  out.push('|---|---|--:|--:|--:|--:|--:|--:|');
  for (const p of present) {
    const a = summary(runs(p.ours, p.workload));
    const b = summary(runs(p.peer, p.workload));
    const unit = a?.unit ?? b?.unit ?? '';
    const ratio = a && b && b.value > 0 ? `${(a.value / b.value).toFixed(2)}×` : '–';
    /** @param {ReturnType<typeof summary>} s */
    const server = (s) => (s && s.cpuPct !== null ? `${s.cpuPct.toFixed(0)}% · ${s.hwmMiB === null ? '–' : s.hwmMiB.toFixed(0)} MiB` : '–');
    /** @param {ReturnType<typeof summary>} s */
    const value = (s) => (s ? `${fmt(s.value, s.unit)}${s.unit === 'MiB/s' && p.workload === 'dmg-read' ? ` (${s.wall.toFixed(2)} s)` : ''}` : '–');
    const client = `${a ? `${a.clientPct.toFixed(0)}%` : '–'} · ${b ? `${b.clientPct.toFixed(0)}%` : '–'}`;
    out.push(`| ${p.title} | ${unit} | ${value(a)} | ${value(b)} | ${ratio} | ${server(a)} | ${server(b)} | ${client} |`);
  }
  const dmgNote = rows.find((r) => r.workload === 'dmg-read' && r.note)?.note;
  if (dmgNote) out.push('', `${dmgNote}.`);
  out.push('');
  return out;
}
