// @ts-check
/**
 * Small helpers for scripts/bench.sh (no dependencies beyond Node's standard library).
 *
 *   node tool.mjs free-port                      print a free TCP port on 127.0.0.1
 *   node tool.mjs fill-random PATH SIZE          write SIZE bytes of random data to PATH
 *   node tool.mjs make-sparse PATH SIZE EXTENT STRIDE
 *                                                a SIZE-byte sparse file with EXTENT bytes of random
 *                                                data at the start of every STRIDE bytes
 *   node tool.mjs record RESULTS key=value...    append one run to RESULTS (JSON lines) and print a
 *                                                one-line summary of it; see record()
 *
 * Sizes accept K/M/G/T suffixes (powers of 1024).
 */
import { randomBytes } from 'node:crypto';
import { appendFileSync, closeSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { createServer } from 'node:net';

/** @param {string} text */
function parseSize(text) {
  const m = /^(\d+)([KMGT]?)$/i.exec(text);
  if (!m) throw new Error(`bad size: ${text}`);
  const shift = { '': 0, K: 10, M: 20, G: 30, T: 40 }[m[2].toUpperCase()] ?? 0;
  return Number(m[1]) * 2 ** shift;
}

/** @returns {Promise<number>} */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') return reject(new Error('no TCP address'));
      server.close(() => resolve(address.port));
    });
  });
}

/** @param {string} path @param {number} size */
function fillRandom(path, size) {
  const fd = openSync(path, 'w');
  try {
    const block = 16 * 1024 * 1024;
    for (let pos = 0; pos < size; pos += block) {
      const buf = randomBytes(Math.min(block, size - pos));
      let done = 0;
      while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done, pos + done);
    }
  } finally {
    closeSync(fd);
  }
}

/** @param {string} path @param {number} size @param {number} extent @param {number} stride */
function makeSparse(path, size, extent, stride) {
  if (extent > stride) throw new Error('extent larger than stride');
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, size);
    const pool = randomBytes(4 * 1024 * 1024 + extent);
    let i = 0;
    for (let pos = 0; pos < size; pos += stride, i++) {
      const len = Math.min(extent, size - pos);
      // Different random bytes per extent (a sliding window over the pool), so nothing dedups.
      const start = (i * 4099) % (pool.length - extent);
      let done = 0;
      while (done < len) done += writeSync(fd, pool, start + done, len - done, pos + done);
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Appends one measured run. Keys: server, workload, run, kind (fio|copy|rss), wall (s), cpu
 * (server CPU seconds during the workload), client (CPU seconds of the client tool: fio,
 * qemu-img or nbdcopy), hwm and rss (KiB), fio (path of fio's JSON output;
 * the metric is IOPS for 4 KiB workloads and MiB/s otherwise), bytes (virtual bytes a copy tool
 * moved; the metric is MiB/s of wall time), note.
 * @param {string} results @param {string[]} pairs
 */
function record(results, pairs) {
  /** @type {Record<string, string>} */
  const kv = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new Error(`bad key=value: ${pair}`);
    kv[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const num = (/** @type {string} */ k) => (kv[k] === undefined || kv[k] === '' ? null : Number(kv[k]));
  /** @type {Record<string, unknown>} */
  const row = {
    server: kv.server,
    workload: kv.workload,
    run: num('run'),
    kind: kv.kind,
    wall: num('wall'),
    cpu: num('cpu'),
    hwmKiB: num('hwm'),
    rssKiB: num('rss'),
    clientCpu: num('client'),
  };
  if (kv.fio) {
    const text = readFileSync(kv.fio, 'utf8');
    // fio may print a notice before the JSON document; start at the first brace.
    const doc = JSON.parse(text.slice(text.indexOf('{')));
    const job = doc.jobs[0];
    if (job.error) throw new Error(`fio job failed with error ${job.error}`);
    const dir = job.write.io_bytes > job.read.io_bytes ? 'write' : 'read';
    const side = job[dir];
    if (!(side.io_bytes > 0)) throw new Error(`fio moved no data (${kv.fio})`);
    const small = Number(job['job options']?.bs ? parseSize(job['job options'].bs) : 0) < 65536;
    row.value = small ? side.iops : side.bw_bytes / 2 ** 20;
    row.unit = small ? 'IOPS' : 'MiB/s';
    row.ioBytes = side.io_bytes;
    row.fioCpu = job.usr_cpu + job.sys_cpu; // % of one CPU
    row.latMeanUs = side.clat_ns ? side.clat_ns.mean / 1000 : null;
  } else if (kv.bytes) {
    const bytes = Number(kv.bytes);
    const wall = Number(kv.wall);
    row.value = bytes / 2 ** 20 / wall;
    row.unit = 'MiB/s';
    row.ioBytes = bytes;
  }
  if (kv.note) row.note = kv.note;
  if (kv.physical) row.physicalBytes = Number(kv.physical);
  appendFileSync(results, JSON.stringify(row) + '\n');
  const value = typeof row.value === 'number' ? row.value.toFixed(row.unit === 'IOPS' ? 0 : 1) : '?';
  const hwm = typeof row.hwmKiB === 'number' ? (row.hwmKiB / 1024).toFixed(0) : '?';
  console.log(`${value} ${row.unit ?? ''}  server cpu ${row.cpu ?? '–'}s  client cpu ${row.clientCpu ?? '?'}s  hwm ${hwm} MiB`);
}

const [cmd, ...args] = process.argv.slice(2);
try {
  switch (cmd) {
    case 'free-port':
      console.log(await freePort());
      break;
    case 'fill-random':
      fillRandom(args[0], parseSize(args[1]));
      break;
    case 'make-sparse':
      makeSparse(args[0], parseSize(args[1]), parseSize(args[2]), parseSize(args[3]));
      break;
    case 'record':
      record(args[0], args.slice(1));
      break;
    default:
      throw new Error(`unknown command: ${cmd ?? '(none)'}`);
  }
} catch (err) {
  console.error(`bench/tool.mjs ${cmd ?? ''}: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
