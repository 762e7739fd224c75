/**
 * Scenario 2, fan-out: S subscribers of one creator over all workers,
 * broadcasts POSTed at a fixed rate (rate x S = BENCH_FANOUT_DELIVERIES per
 * second): deliveries/s, delivery latency, lost and duplicated deliveries
 * (each broadcast carries a sequence number).
 */
import type { Ctx } from '../lib/context.js';
import type { Fleet } from '../lib/fleet.js';
import { measureFanout, type FanoutResult } from '../lib/measure.js';
import { fmt, ratio } from '../lib/stats.js';
import { startTarget } from '../lib/targets.js';
import type { Table } from '../lib/report.js';

export async function run(ctx: Ctx, fleet: Fleet): Promise<Table> {
  const rows: string[][] = [];
  for (const subs of ctx.fanoutSubs) {
    const rate = Math.max(1, Math.round(ctx.fanoutDeliveries / subs));
    const res: Partial<Record<string, FanoutResult>> = {};
    for (const name of ctx.targets) {
      const target = await startTarget(name, ctx.workers);
      try {
        res[name] = await measureFanout(fleet, [target], subs, rate, ctx.durationMs);
      } finally {
        await target.stop();
      }
      const r = res[name]!;
      process.stderr.write(`fanout ${name} S=${subs}: ${fmt(r.deliveredPerSec)} deliveries/s lost ${r.lost} dup ${r.dup} p99 ${fmt(r.p99, 1)} ms\n`);
    }
    for (const name of ctx.targets) {
      const r = res[name]!;
      rows.push([
        name,
        fmt(subs),
        `${rate}/s`,
        fmt(r.deliveredPerSec),
        ratio(r.deliveredPerSec, res.uws?.deliveredPerSec ?? NaN),
        ratio(r.deliveredPerSec, res.ws?.deliveredPerSec ?? NaN),
        fmt(r.p50, 1),
        fmt(r.p99, 1),
        fmt(r.lost),
        fmt(r.dup),
        r.loadCores.toFixed(2),
        r.serverCores.toFixed(2),
      ]);
    }
  }
  return {
    title: 'Fan-out: broadcasts to every connection of one creator',
    method: `Subscribers spread over all workers; broadcasts POSTed at a fixed rate for ${ctx.durationMs / 1000} s, each with a sequence number and its send time; latency is POST to delivery.`,
    columns: ['server', 'subscribers', 'broadcasts', 'deliveries/s', 'vs uWS', 'vs ws', 'p50 ms', 'p99 ms', 'lost', 'duplicated', 'load CPU (cores)', 'server CPU (cores)'],
    rows,
    notes: [],
  };
}
