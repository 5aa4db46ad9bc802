// The package's install script: builds the optional native fast paths (native/src, Linux only)
// with node-gyp. It never fails the install: without python3, make or a C compiler (or without
// the Node headers node-gyp needs) stackbd runs on plain node:fs, and the server says so in its
// log. node-gyp's output goes to native/build.log; one line goes to the terminal.
//   npm rebuild stackbd  (-g for a global install)   builds it again, e.g. after installing a compiler
//   npm install --ignore-scripts ...                 builds nothing
// (STACKBD_NO_NATIVE=1 is a switch for run time: it does not stop the build.)
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const log = path.join(here, 'build.log');

function finish(message) {
  console.log(`stackbd: ${message}`);
  process.exit(0);
}

if (process.platform !== 'linux') finish(`no native fast paths on ${process.platform} (they are for Linux); stackbd runs without them`);

// npm runs install scripts with its own node-gyp named in npm_config_node_gyp (and on PATH).
const gyp = process.env.npm_config_node_gyp;
const [command, ...prefix] = gyp ? [process.execPath, gyp] : ['node-gyp'];
fs.rmSync(log, { force: true });
const result = spawnSync(command, [...prefix, 'rebuild', '--directory', here], {
  cwd: here,
  encoding: 'utf8',
  stdio: ['ignore', 'pipe', 'pipe'],
  timeout: 10 * 60 * 1000,
});
if (result.status === 0) finish('native fast paths built');

const output = `${result.stdout ?? ''}${result.stderr ?? ''}${result.error ? `\n${result.error.message}\n` : ''}`;
try {
  fs.writeFileSync(log, output);
} catch {
  // A read-only package directory: the summary line below is all there is.
}
// A half-made build must not be loaded later.
fs.rmSync(path.join(here, 'build'), { recursive: true, force: true });
const noGyp = result.error && 'code' in result.error && result.error.code === 'ENOENT';
const noToolchain = /not found: (make|g\+\+|cc|gcc)|(make|g\+\+|cc|gcc|c\+\+): (command )?not found|spawn (make|g\+\+|cc|gcc) ENOENT|Could not find any Python/.test(output);
const why = noGyp ? 'node-gyp not found: run this through npm (npm rebuild stackbd)' : noToolchain ? 'no C toolchain (python3, make, g++) found' : `node-gyp failed, see ${log}`;
finish(`native fast paths not built (${why}); stackbd works without them. To build them later: install python3, make and g++, then run "npm rebuild stackbd" (add -g for a global install)`);
