// @ts-check
/**
 * Decode throughput of the LZFSE decoder as built in dist/ (npm run build first).
 *
 * Input: SIZE MiB of mixed data (1 MiB segments of text, record-like binary, long runs and
 * random bytes in turn), compressed by the test-only encoders of test/io/codecs/lzfse/helpers/
 * (Debian has no package of the reference `lzfse` tool), which this script transpiles with the
 * TypeScript compiler into a temporary folder. Three layouts are timed:
 *   - one stream of `bvx2` blocks (the reference encoder's choice for large inputs);
 *   - the same data as 1 MiB streams, one decode call each (how DMG chunks arrive);
 *   - one stream of LZVN blocks.
 * Prints MiB/s of decoded bytes, best and median of RUNS runs, after checking the output, by
 * wall time and by this process's CPU time (steadier on a machine shared with other work).
 *
 *   node scripts/bench/lzfse-decode.mjs [--size MIB] [--runs N]
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ts from 'typescript';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const args = process.argv.slice(2);
/** @param {string} name @param {number} fallback */
function option(name, fallback) {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
}
const sizeMiB = option('--size', 64);
const runs = option('--runs', 5);
const MiB = 1 << 20;

/** Transpiles the test encoders into a temporary ESM folder and imports them. */
async function loadEncoders() {
  const helpers = 'test/io/codecs/lzfse/helpers';
  const dir = mkdtempSync(join(tmpdir(), 'stackbd-lzfse-bench-'));
  writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
  const files = ['bit-writer', 'match-finder', 'lzvn-encoder', 'lzfse-block-encoder', 'stream-encoder', 'sample-data']
    .map((name) => `${helpers}/${name}`)
    .concat('test/formats/helpers/mem-file');
  for (const file of files) {
    const source = readFileSync(join(root, `${file}.ts`), 'utf8');
    const { outputText } = ts.transpileModule(source, {
      compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
    });
    mkdirSync(dirname(join(dir, file)), { recursive: true });
    writeFileSync(join(dir, `${file}.js`), outputText);
  }
  const encoder = await import(pathToFileURL(join(dir, helpers, 'stream-encoder.js')).href);
  const samples = await import(pathToFileURL(join(dir, helpers, 'sample-data.js')).href);
  rmSync(dir, { recursive: true, force: true });
  return { encoder, samples };
}

/** @param {number[]} values */
function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

const { decodeLzfse } = await import(pathToFileURL(join(root, 'dist/io/codecs/lzfse/index.js')).href);
const { encoder, samples } = await loadEncoders();

const shapes = ['text', 'binary', 'runs', 'random'];
const plain = new Uint8Array(sizeMiB * MiB);
for (let s = 0; s < sizeMiB; s++) plain.set(samples.sampleData(shapes[s % shapes.length], MiB, 1000 + s), s * MiB);

/** @type {{ name: string, streams: Uint8Array[] }[]} */
const layouts = [];
let t0 = performance.now();
layouts.push({ name: `one bvx2 stream (${sizeMiB} MiB)`, streams: [encoder.encodeLikeReference(plain)] });
const encodeSeconds = (performance.now() - t0) / 1000;
layouts.push({
  name: `${sizeMiB} streams of 1 MiB (DMG chunks)`,
  streams: Array.from({ length: sizeMiB }, (_, s) => encoder.encodeLikeReference(plain.subarray(s * MiB, (s + 1) * MiB))),
});
layouts.push({ name: `one LZVN stream (${sizeMiB} MiB)`, streams: [encoder.encodeMixed(plain, ['lzvn'], MiB)] });

console.log(`input: ${sizeMiB} MiB mixed (text, binary, runs, random per MiB); bvx2 encode took ${encodeSeconds.toFixed(1)} s (test encoder)`);
const output = new Uint8Array(plain.length);
for (const layout of layouts) {
  const compressed = layout.streams.reduce((n, s) => n + s.length, 0);
  const speeds = [];
  const cpuSpeeds = [];
  for (let run = 0; run < runs; run++) {
    output.fill(0);
    t0 = performance.now();
    const cpu0 = process.cpuUsage();
    let pos = 0;
    for (const stream of layout.streams) pos += decodeLzfse(stream, output.subarray(pos));
    const cpu = process.cpuUsage(cpu0);
    const seconds = (performance.now() - t0) / 1000;
    if (pos !== plain.length || Buffer.compare(Buffer.from(output.buffer, 0, pos), Buffer.from(plain.buffer)) !== 0) {
      throw new Error(`${layout.name}: decoded output differs from the input`);
    }
    speeds.push(plain.length / MiB / seconds);
    cpuSpeeds.push(plain.length / MiB / ((cpu.user + cpu.system) / 1e6));
  }
  console.log(
    `${layout.name}: compressed ${(compressed / MiB).toFixed(1)} MiB (${((100 * compressed) / plain.length).toFixed(1)}%), ` +
      `decode best ${Math.max(...speeds).toFixed(0)} MiB/s, median ${median(speeds).toFixed(0)} MiB/s over ${runs} runs ` +
      `(by CPU time: best ${Math.max(...cpuSpeeds).toFixed(0)}, median ${median(cpuSpeeds).toFixed(0)} MiB/s)`,
  );
}
