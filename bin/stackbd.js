#!/usr/bin/env node
// The thread pool must be sized before the first fs call anywhere in the process:
// every positional read or write of an image is one job on it.
process.env.UV_THREADPOOL_SIZE ??= '16';
await import('../dist/cli/main.js');
