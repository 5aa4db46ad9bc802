// @ts-check
/**
 * The report sections of issue 13's bulk-copy and many-exports cases (scripts/bench.sh,
 * scripts/bench/many-exports.sh), kept apart from report.mjs's tables: they have rows of their
 * own (workload bulk-convert; kind many) and their own columns.
 *
 *   import { bulkAndManySections } from './report-bulk-many.mjs';
 *   for (const line of bulkAndManySections(rows)) p(line);
 */

/** @param {number[]} xs */
function median(xs) {
  const s = [...xs].filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return NaN;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/** @param {number} v @param {number} [digits] */
const fmt = (v, digits = 0) => (Number.isFinite(v) ? v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '–');
/** @param {number} kib */
const mib = (kib) => fmt(kib / 1024);

/** @typedef {Record<string, any>} Row */

/** @param {Row[]} rows @returns {string[]} */
function bulkSection(rows) {
  const bulk = rows.filter((r) => r.workload === 'bulk-convert');
  if (bulk.length === 0) return [];
  const tools = ['stackbd-convert', 'qemu-img-convert', 'nbdcopy-cow'].filter((t) => bulk.some((r) => r.server === t));
  /** @param {string} t */
  const of = (t) => bulk.filter((r) => r.server === t);
  /** @param {string} t @param {(r: Row) => number} f */
  const med = (t, f) => median(of(t).map(f));
  const out = [];
  out.push('## Bulk copy: convert of the 1 GiB 25%-allocated stack');
  out.push('');
  out.push('The stack of the convert workload (`sparse.raw`, 64 KiB of data every 256 KiB, under an empty overlay) flattened into a new RAW file by each tool: `stackbd convert sparse.raw overlay.asif -O out.raw` (pipelined, 4 pieces of 4 MiB in flight), `qemu-img convert -f qcow2 -O raw overlay.qcow2 out.raw` (the qcow2 peer, over the same base), and `nbdcopy nbd://… out.raw` from `nbdkit --filter=cow file`. Every output is compared with the base (`cmp`) in the first run. CPU and peak RSS of the copying process from GNU time (`/usr/bin/time`); nbdkit\'s CPU is added for nbdcopy. MiB/s of virtual size (1 GiB / wall time, the process start included).');
  out.push('');
  out.push(`| tool | MiB/s | wall s | CPU s | peak RSS MiB | output allocated MiB | stackbd / tool |`);
  out.push('|---|--:|--:|--:|--:|--:|--:|');
  const ours = med('stackbd-convert', (r) => r.value);
  for (const t of tools) {
    const v = med(t, (r) => r.value);
    out.push(`| ${t} | ${fmt(v)} | ${fmt(med(t, (r) => r.wall), 2)} | ${fmt(med(t, (r) => (r.clientCpu ?? 0) + (r.cpu ?? 0)), 2)} | ${mib(med(t, (r) => r.hwmKiB))} | ${fmt(med(t, (r) => r.physicalBytes / 2 ** 20))} | ${t === 'stackbd-convert' || !Number.isFinite(ours) ? '–' : `${(ours / v).toFixed(2)}×`} |`);
  }
  out.push('');
  return out;
}

/** @param {Row[]} rows @returns {string[]} */
function manySection(rows) {
  const many = rows.filter((r) => r.kind === 'many');
  if (many.length === 0) return [];
  const quiet = many.filter((r) => r.workload === 'many-exports');
  const first = many[0];
  const out = [];
  out.push(`## Many exports: ${first.exports} writable exports, ${first.jobs} connections`);
  out.push('');
  out.push(`\`bash scripts/bench/many-exports.sh\`: one server process with ${first.exports} exports, each an overlay over one shared 1 GiB RAW base that is 25% allocated (stackbd: ASIF overlays from a config file; qemu-storage-daemon: qcow2 overlays made with \`-o extended_l2=on\` so that a 4 KiB write into a new cluster writes 4 KiB, \`--blockdev\` file+qcow2 each, all backed by one raw node of the base, one \`--nbd-server\`, \`--export type=nbd\` each). fio \`--ioengine=nbd --thread\`, ${first.jobs} jobs, job j on export ⌊j·N/J⌋ (one connection to each of ${first.jobs} exports), 4 KiB random reads and writes 50/50 at iodepth ${first.iodepth}, grouped. Idle RSS: VmRSS 2 s after the last export answers; peak: VmHWM after the run (start-up included); fds: /proc/PID/fd idle and the most seen under load; p99: fio's completion latency, reads / writes. IOPS is fio's (each job's I/Os over its own run, which starts once it has connected); IOPS over fio's whole run counts the same I/Os over the time from fio's start to its end, connecting included: a server that takes its connections slowly staggers the jobs, which the first figure hides.`);
  out.push('');
  out.push('| server | start s | idle RSS MiB | peak RSS MiB | fds idle / load | IOPS (r+w) | fio run s | IOPS over fio\'s whole run | p99 read / write ms | server CPU s |');
  out.push('|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
  for (const r of quiet) {
    const label = `${r.server}${r.admin ? ' (admin API on)' : ''}`;
    out.push(`| ${label} | ${fmt(r.startSeconds, 1)} | ${mib(r.idleRssKiB)} | ${mib(r.hwmKiB)} | ${r.fdsIdle} / ${r.fdsLoad} | ${fmt(r.value)} | ${fmt(r.fioElapsed ?? NaN)} | ${fmt(r.spanIops ?? NaN)} | ${fmt(r.p99ReadMs)} / ${fmt(r.p99WriteMs)} | ${fmt(r.cpu, 1)} |`);
  }
  out.push('');
  const churn = many.filter((r) => r.workload === 'many-exports-churn');
  if (churn.length > 0) {
    out.push('While exports are added and removed (`POST /exports`, `DELETE /exports/NAME` through the admin socket with curl, in a loop for the whole fio run), compared with the quiet run just before on the same server:');
    out.push('');
    out.push('| server | adds+removes | IOPS quiet → during | p99 read ms quiet → during | p99 write ms quiet → during |');
    out.push('|---|--:|--:|--:|--:|');
    for (const c of churn) {
      // The quiet run on the same server: the last admin-API run recorded before this one.
      const q = many.slice(0, many.indexOf(c)).reverse().find((r) => r.workload === 'many-exports' && r.server === c.server && r.admin);
      out.push(`| ${c.server} | ${c.churnOps} | ${fmt(q?.value ?? NaN)} → ${fmt(c.value)} | ${fmt(q?.p99ReadMs ?? NaN)} → ${fmt(c.p99ReadMs)} | ${fmt(q?.p99WriteMs ?? NaN)} → ${fmt(c.p99WriteMs)} |`);
    }
    out.push('');
  }
  const ours = quiet.find((r) => String(r.server).startsWith('stackbd') && !r.admin);
  if (ours && ours.exports === 500) {
    out.push(`Targets (issue 13): idle RSS ≤ 128 MiB: ${mib(ours.idleRssKiB)} MiB, ${ours.idleRssKiB <= 128 * 1024 ? 'pass' : '**FAIL**'}; peak RSS ≤ 256 MiB: ${mib(ours.hwmKiB)} MiB, ${ours.hwmKiB <= 256 * 1024 ? 'pass' : '**FAIL**'}.`);
    out.push('');
  }
  return out;
}

/** @param {Row[]} rows @returns {string[]} */
export function bulkAndManySections(rows) {
  return [...bulkSection(rows), ...manySection(rows)];
}
