// Benchmark only (every server the benchmark starts, the baselines too, is
// run with --expose-gc and this file): SIGUSR2 runs a full garbage
// collection, so RSS is read after one (lib/procs.ts settledRssKiB).
'use strict';
if (typeof globalThis.gc === 'function') process.on('SIGUSR2', () => globalThis.gc());
