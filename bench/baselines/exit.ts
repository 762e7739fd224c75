/**
 * How a baseline's processes stop on SIGTERM: each worker exits by itself
 * (so `--cpu-prof` in BENCH_NODE_ARGS writes its profile, and a floor's
 * profile can be set beside the gateway's); the primary waits for them at
 * most 2 s, kills what is left, and exits.
 */
import type { Worker } from 'node:cluster';

/** The primary: on SIGTERM, stops `workers` as above, then exits. */
export function stopWorkersOnSigterm(workers: Worker[]): void {
  process.on('SIGTERM', () => {
    const left = new Set(workers.filter((w) => !w.isDead()));
    if (left.size === 0) process.exit(0);
    for (const w of left) {
      w.once('exit', () => {
        left.delete(w);
        if (left.size === 0) process.exit(0);
      });
      w.process.kill('SIGTERM');
    }
    setTimeout(() => {
      for (const w of left) w.process.kill('SIGKILL');
      process.exit(0);
    }, 2000);
  });
}

/** A worker: exits on SIGTERM (a clean exit, so profiles are written). */
export function exitOnSigterm(): void {
  process.on('SIGTERM', () => process.exit(0));
}
