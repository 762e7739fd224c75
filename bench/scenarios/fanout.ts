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
    const fixed = Math.max(1, Math.round(ctx.fanoutDeliveries / subs));
    for (const rate of ctx.smoke ? [fixed] : [0, fixed]) {
    const res: Partial<Record<string, FanoutResult>> = {};
    for (const name of ctx.targets) {
      const target = await startTarget(name, ctx.workers);
      try {
        res[name] = await measureFanout(fleet, [target], subs, rate, ctx.durationMs);
      } finally {
        await target.stop();
      }
      const r = res[name]!;
      process.stderr.write(`fanout ${name} S=${subs} ${rate || 'max'}: ${fmt(r.deliveredPerSec)} deliveries/s lost ${r.lost} dup ${r.dup} p99 ${fmt(r.p99, 1)} ms load ${r.loadCores.toFixed(2)}\n`);
    }
    for (const name of ctx.targets) {
      const r = res[name]!;
      rows.push([
        name,
        fmt(subs),
        rate ? `${rate}/s` : `max (${fmt(r.broadcasts / (ctx.durationMs / 1000))}/s)`,
        fmt(r.deliveredPerSec),
        ratio(r.deliveredPerSec, res.uws?.deliveredPerSec ?? NaN),
        ratio(r.deliveredPerSec, res.ws?.deliveredPerSec ?? NaN),
        fmt(r.p50, 1),
        fmt(r.p99, 1),
        fmt(r.lost),
        fmt(r.dup),
        r.loadCores.toFixed(2),
        r.serverCores.toFixed(2),
        fmt((r.serverCores / r.deliveredPerSec) * 1e6, 2),
        ratio(r.serverCores / r.deliveredPerSec, (res.ws?.serverCores ?? NaN) / (res.ws?.deliveredPerSec ?? NaN)),
      ]);
    }
    }
  }
  return {
    title: 'Fan-out: broadcasts to every connection of one creator',
    method: `Subscribers spread over all workers; broadcasts POSTed for ${ctx.durationMs / 1000} s, each with a sequence number and its send time; latency is POST to delivery. "max": closed loop, the next broadcast is POSTed as soon as fewer than 4 are still on their way to some subscriber (throughput); "N/s": a fixed rate of ${fmt(ctx.fanoutDeliveries)} deliveries/s (latency under a steady load).`,
    columns: ['server', 'subscribers', 'broadcasts', 'deliveries/s', 'vs uWS', 'vs ws', 'p50 ms', 'p99 ms', 'lost', 'duplicated', 'load CPU (cores)', 'server CPU (cores)', 'server µs / delivery', 'vs ws (cost)'],
    rows,
    notes: [
      'Server and load generator share this machine\'s cores, and every delivery crosses loopback TCP twice in the kernel, so at "max" all servers hit the same ceiling; "server µs / delivery" (server CPU time per delivered frame) is the efficiency figure that does not depend on who saturated.',
    ],
  };
}
