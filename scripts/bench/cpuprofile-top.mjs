// @ts-check
/**
 * Summarises V8 .cpuprofile files (from `node --cpu-prof`): the functions with the most self
 * time, and self time grouped by category (program idle, GC, native/libuv, node internals,
 * dependencies, stackbd's own code).
 *
 *   node cpuprofile-top.mjs FILE.cpuprofile... [--top N]
 */
import { readFileSync } from 'node:fs';

/**
 * @typedef {{ id: number, callFrame: { functionName: string, url: string, lineNumber: number },
 *   hitCount?: number, children?: number[] }} ProfileNode
 * @typedef {{ nodes: ProfileNode[], samples: number[], timeDeltas: number[], startTime: number, endTime: number }} Profile
 */

const args = process.argv.slice(2);
let top = 25;
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--top') top = Number(args[++i]);
  else files.push(args[i]);
}
if (files.length === 0) {
  console.error('usage: node cpuprofile-top.mjs FILE.cpuprofile... [--top N]');
  process.exit(2);
}

/** @type {Map<string, number>} self time in µs by function */
const self = new Map();
/** @type {Map<string, number>} */
const byCategory = new Map();
let total = 0;

/** @param {ProfileNode['callFrame']} f */
function category(f) {
  const name = f.functionName;
  if (name === '(idle)') return 'idle (waiting for events)';
  if (name === '(garbage collector)') return 'garbage collector';
  if (name === '(program)') return 'program (native: libuv, syscalls, V8 outside JS)';
  if (name === '(root)') return 'root';
  if (f.url.startsWith('node:')) return 'node internals (node:*)';
  if (f.url.includes('/node_modules/')) return 'dependencies (node_modules)';
  if (f.url.includes('/dist/') || f.url.includes('/src/')) return 'stackbd (dist/)';
  if (f.url === '') return 'native/builtin (no url)';
  return 'other JS';
}

for (const file of files) {
  /** @type {Profile} */
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  /** @type {Map<number, ProfileNode>} */
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  for (let i = 0; i < prof.samples.length; i++) {
    const node = byId.get(prof.samples[i]);
    if (!node) continue;
    // timeDeltas[i] is the time before sample i; attribute the interval to the sample it ends.
    const dt = prof.timeDeltas[i] ?? 0;
    const f = node.callFrame;
    const where = f.url ? `${f.url.replace(/^.*\/(dist|src|node_modules)\//, '$1/')}:${f.lineNumber + 1}` : '';
    const key = `${f.functionName || '(anonymous)'}${where ? ` ${where}` : ''}`;
    self.set(key, (self.get(key) ?? 0) + dt);
    const c = category(f);
    byCategory.set(c, (byCategory.get(c) ?? 0) + dt);
    total += dt;
  }
}

const idle = byCategory.get('idle (waiting for events)') ?? 0;
const busy = total - idle;
const pct = (/** @type {number} */ us, /** @type {number} */ of) => `${((100 * us) / of).toFixed(1)}%`.padStart(6);
console.log(`profiled ${(total / 1e6).toFixed(2)} s; idle ${pct(idle, total)}, busy ${(busy / 1e6).toFixed(2)} s`);
console.log('\nself time by category (% of busy time):');
for (const [c, us] of [...byCategory].sort((a, b) => b[1] - a[1])) {
  if (c.startsWith('idle')) continue;
  console.log(`  ${pct(us, busy)}  ${c}`);
}
console.log(`\ntop ${top} functions by self time (% of busy time, % of all time):`);
for (const [k, us] of [...self].filter(([k]) => !k.startsWith('(idle)')).sort((a, b) => b[1] - a[1]).slice(0, top)) {
  console.log(`  ${pct(us, busy)} ${pct(us, total)}  ${k}`);
}
