/** Benchmark knobs, all from environment variables (see bench/run.ts usage()). */
import type { TargetName } from './targets.js';

function list(name: string, def: string): number[] {
  return (process.env[name] ?? def).split(',').map((s) => Number(s.trim())).filter((n) => Number.isFinite(n) && n > 0);
}

export interface Ctx {
  durationMs: number;
  workers: number;
  loadProcs: number;
  targets: TargetName[];
  chatConns: number[];
  fanoutSubs: number[];
  fanoutDeliveries: number;
  stormN: number;
  slowSessions: number;
  slowThinkMs: number;
  /**
   * Rounds of the comparisons whose ratios are targets (chat, fan-out and
   * storm against bare uWS, widget.v2 chat against v1 in history, the
   * rate-limit variants against limits off): each round
   * measures every setup once, in a rotated order, and the tables give the
   * mean and each round's ratio (the spread).
   */
  rounds: number;
  /** Warm-up before each measured run. */
  warmupMs: number;
  /**
   * BENCH_SMOKE=1: the smallest matrix of every scenario (one size, one
   * rate, one mode where a scenario varies them), so the test suite can check
   * the benchmark code in seconds. Its figures mean nothing.
   */
  smoke: boolean;
}

export function readCtx(): Ctx {
  return {
    durationMs: Number(process.env.BENCH_DURATION_S ?? 8) * 1000,
    workers: Number(process.env.BENCH_WORKERS ?? 2),
    loadProcs: Number(process.env.BENCH_LOAD_PROCS ?? 2),
    targets: (process.env.BENCH_TARGETS ?? 'uws,gateway,ws').split(',').map((s) => s.trim()) as TargetName[],
    chatConns: list('BENCH_CHAT_CONNS', '100,1000'),
    fanoutSubs: list('BENCH_FANOUT_SUBS', '1000,10000'),
    fanoutDeliveries: Number(process.env.BENCH_FANOUT_DELIVERIES ?? 100_000),
    stormN: Number(process.env.BENCH_STORM_N ?? 30_000),
    slowSessions: Number(process.env.BENCH_SLOW_SESSIONS ?? 5000),
    slowThinkMs: Number(process.env.BENCH_SLOW_THINK_MS ?? 1000),
    warmupMs: Number(process.env.BENCH_WARMUP_S ?? 1) * 1000,
    rounds: process.env.BENCH_SMOKE === '1' ? 1 : Math.max(1, Number(process.env.BENCH_ROUNDS ?? 2)),
    smoke: process.env.BENCH_SMOKE === '1',
  };
}
