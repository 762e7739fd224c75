/**
 * A baseline's cluster.
 *
 * Its workers start with the gateway workers' V8 flags (config's
 * workerExecArgv, from the same WORKER_SEMI_SPACE_MB and WORKER_GC), so a
 * ratio compares code, not V8 settings: a smaller young generation means
 * more scavenges, each with a fixed cost.
 *
 * On SIGTERM each worker exits by itself (so `--cpu-prof` in
 * BENCH_NODE_ARGS writes its profile, and a floor's profile can be set
 * beside the gateway's); the primary waits for them at most 2 s, kills
 * what is left, and exits.
 */
import cluster, { type Worker } from 'node:cluster';
import { read } from '../../src/config/variables.js';
import { workerExecArgv } from '../../src/config/index.js';

/** The primary: forks `n` workers with the gateway's worker flags (and IPC serialization). */
export function forkWorkers(n: number): Worker[] {
  const execArgv = workerExecArgv(process.execArgv, { semiSpaceMb: read(process.env, 'WORKER_SEMI_SPACE_MB'), gc: read(process.env, 'WORKER_GC') });
  cluster.setupPrimary({ serialization: 'advanced', execArgv });
  return Array.from({ length: n }, () => cluster.fork());
}

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
