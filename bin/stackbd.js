#!/usr/bin/env -S MALLOC_ARENA_MAX=2 MALLOC_TRIM_THRESHOLD_=131072 node --max-semi-space-size=4 --optimize-for-size
// The interpreter line keeps the server's memory small: a 4 MiB young generation (V8's default
// of 16 MiB per semi-space costs ~40 MiB of RSS for no measurable speed), a heap that is
// collected before it grows far (--optimize-for-size: peak RSS on a 1 TiB ASIF image under 1 GiB
// of random writes 166 -> 110 MiB; it does cost speed under 256 connections to 500 exports:
// 50-53k IOPS and a 293 MiB peak with it, 64k IOPS and a 539 MiB peak without), and
// two malloc arenas (buffers freed by one thread and reused by another do not pile up), which
// give memory freed at the top of the heap back above 128 KiB instead of glibc's adaptive
// threshold (500 exports under 256 connections: the brk heap held 183 MiB of a 293 MiB peak;
// with it, peaks of 256 MiB alone and 261 MiB in a full benchmark run, IOPS within the spread).
// The thread pool must be sized before the first fs call anywhere in the process:
// every positional read or write of an image is one job on it.
process.env.UV_THREADPOOL_SIZE ??= '16';
await import('../dist/cli/main.js');
