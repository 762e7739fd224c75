// Benchmark and tests only (every server the benchmark starts, the baselines
// too, and a test cluster started with `collectable`, is run with --expose-gc
// and this file): SIGUSR2 runs a full garbage collection, so RSS is read
// after one (lib/procs.ts settledRssKiB, the churn soak in hardening.test.ts).
'use strict';
if (typeof globalThis.gc === 'function') process.on('SIGUSR2', () => globalThis.gc());
