/**
 * What rate limiting and the msgpack framing cost on the chat path: the
 * same closed-loop chat (100 connections, echo engine) with every limit off,
 * with all four limits on (budgets reconciled through the
 * primary, then through Redis), and with msgpack framing, against the same
 * run's figure with limits off and JSON.
 */
import type { Ctx } from '../lib/context.js';
import type { Fleet } from '../lib/fleet.js';
import { measureChat, type ChatResult } from '../lib/measure.js';
import { fmt, inRounds, mean, ratio, ratios } from '../lib/stats.js';
import { startTarget } from '../lib/targets.js';
import { startRedis } from '../lib/redis.js';
import type { Table } from '../lib/report.js';

const OFF = { RATE_LIMIT_MESSAGES: '0', FRAME_RATE_LIMIT: '0', AI_BUDGET_PER_MINUTE: '0', CONNECT_RATE_PER_IP: '0' };
/** Every limit on, far above what the load reaches: each frame and message is charged, none refused. */
const ON = { RATE_LIMIT_MESSAGES: '1000000', RATE_LIMIT_WINDOW_S: '1', FRAME_RATE_LIMIT: '1000000', AI_BUDGET_PER_MINUTE: '100000000', CONNECT_RATE_PER_IP: '100000' };

export async function run(ctx: Ctx, fleet: Fleet): Promise<Table> {
  const conns = Number(process.env.BENCH_LIMITS_CONNS ?? 100);
  const redis = await startRedis();
  const variants: Array<[label: string, env: Record<string, string>, msgpack: boolean]> = [
    ['limits off, JSON', OFF, false],
    ['all limits on (embedded: budgets through the primary), JSON', ON, false],
    ['all limits on (budgets through Redis), JSON', { ...ON, REDIS_URL: redis.url, REDIS_PREFIX: 'benchlim:' }, false],
    ['limits off, msgpack', OFF, true],
  ];
  const chosen = ctx.smoke ? [variants[0]!, variants[2]!] : variants;
  let runs: ChatResult[][];
  try {
    runs = await inRounds(ctx.rounds, chosen, async ([label, env, msgpack], round) => {
      const target = await startTarget('gateway', ctx.workers, env, label);
      try {
        const r = await measureChat(fleet, target, conns, { durationMs: ctx.durationMs, warmupMs: ctx.warmupMs, msgpack });
        process.stderr.write(`limits ${label} round ${round + 1}: ${fmt(r.perSec)} resp/s p99 ${fmt(r.p99, 2)} ms\n`);
        return r;
      } finally {
        await target.stop();
      }
    });
  } finally {
    redis.stop();
  }
  const us = (r: ChatResult) => (r.serverCores / r.perSec) * 1e6;
  const base = runs[0]!;
  const rows = chosen.map(([label], i) => {
    const rs = runs[i]!;
    const avg = (f: (r: ChatResult) => number) => mean(rs.map(f));
    return [
      label,
      fmt(avg((r) => r.perSec)),
      ratio(avg((r) => r.perSec), mean(base.map((r) => r.perSec))),
      ratios(rs.map((r) => r.perSec), base.map((r) => r.perSec)),
      fmt(avg((r) => r.p50), 2),
      fmt(avg((r) => r.p99), 2),
      fmt(rs.reduce((a, r) => a + r.errors, 0)),
      avg((r) => r.loadCores).toFixed(2),
      avg((r) => r.serverCores).toFixed(2),
      fmt(avg(us), 1),
      ratio(avg(us), mean(base.map(us))),
    ];
  });
  return {
    title: 'Rate limits and msgpack framing on the chat path',
    method: `${conns} chat connections, closed loop, echo engine, ${ctx.durationMs / 1000} s measured. "All limits on": FRAME_RATE_LIMIT, CONNECT_RATE_PER_IP, RATE_LIMIT_MESSAGES and AI_BUDGET_PER_MINUTE set far above the load, so every frame and message is charged to its buckets (and the session and creator budgets reconciled every RATE_LIMIT_SYNC_MS) but none is refused. ${ctx.rounds} round(s), each measuring every variant once (in a rotated order): means over the rounds ("errors": the total), and each round's ratio. Ratios against the first row, same run.`,
    columns: ['variant', 'responses/s', 'vs limits off, JSON', 'each round vs limits off, JSON', 'p50 ms', 'p99 ms', 'errors', 'load CPU (cores)', 'server CPU (cores)', 'server µs per response', 'vs limits off, JSON (cost)'],
    rows,
    notes: [],
  };
}
