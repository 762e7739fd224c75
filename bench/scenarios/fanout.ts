/**
 * Scenario 2, fan-out: S subscribers of one creator over all workers,
 * broadcasts POSTed at a fixed rate (rate x S = BENCH_FANOUT_DELIVERIES per
 * second): deliveries/s, delivery latency, lost and duplicated deliveries
 * (each broadcast carries a sequence number).
 */
import type { Ctx } from '../lib/context.js';
import type { Fleet } from '../lib/fleet.js';
import { measureFanout, type FanoutResult } from '../lib/measure.js';
import { fmt, inRounds, mean, ratio, ratios } from '../lib/stats.js';
import { startTarget } from '../lib/targets.js';
import type { Table } from '../lib/report.js';

export async function run(ctx: Ctx, fleet: Fleet): Promise<Table> {
  const rows: string[][] = [];
  for (const subs of ctx.fanoutSubs) {
    const fixed = Math.max(1, Math.round(ctx.fanoutDeliveries / subs));
    for (const rate of ctx.smoke ? [fixed] : [0, fixed]) {
      const results = await inRounds(ctx.rounds, ctx.targets, async (name, round) => {
        const target = await startTarget(name, ctx.workers);
        let r: FanoutResult;
        try {
          r = await measureFanout(fleet, [target], subs, rate, ctx.durationMs);
        } finally {
          await target.stop();
        }
        process.stderr.write(`fanout ${name} S=${subs} ${rate || 'max'} round ${round + 1}: ${fmt(r.deliveredPerSec)} deliveries/s lost ${r.lost} dup ${r.dup} p99 ${fmt(r.p99, 1)} ms load ${r.loadCores.toFixed(2)}\n`);
        return r;
      });
      const runs: Record<string, FanoutResult[]> = Object.fromEntries(ctx.targets.map((n, i) => [n, results[i]!]));
      const us = (r: FanoutResult) => (r.serverCores / r.deliveredPerSec) * 1e6;
      const avg = (name: string | undefined, f: (r: FanoutResult) => number) => (name && runs[name] ? mean(runs[name].map(f)) : NaN);
      const sum = (rs: FanoutResult[], f: (r: FanoutResult) => number) => rs.reduce((a, r) => a + f(r), 0);
      for (const name of ctx.targets) {
        const rs = runs[name]!;
        rows.push([
          name,
          fmt(subs),
          rate ? `${rate}/s` : `max (${fmt(avg(name, (r) => r.broadcasts) / (ctx.durationMs / 1000))}/s)`,
          fmt(avg(name, (r) => r.deliveredPerSec)),
          ratio(avg(name, (r) => r.deliveredPerSec), avg('uws', (r) => r.deliveredPerSec)),
          ratio(avg(name, (r) => r.deliveredPerSec), avg('ws', (r) => r.deliveredPerSec)),
          fmt(avg(name, (r) => r.p50), 1),
          fmt(avg(name, (r) => r.p99), 1),
          fmt(sum(rs, (r) => r.lost)),
          fmt(sum(rs, (r) => r.dup)),
          avg(name, (r) => r.loadCores).toFixed(2),
          avg(name, (r) => r.serverCores).toFixed(2),
          fmt(avg(name, us), 2),
          ratio(avg(name, us), avg('uws', us)),
          ratios(rs.map(us), runs.uws?.map(us)),
          ratio(avg(name, us), avg('ws', us)),
        ]);
      }
    }
  }
  return {
    title: 'Fan-out: broadcasts to every connection of one creator',
    method: `Subscribers spread over all workers; broadcasts POSTed for ${ctx.durationMs / 1000} s, each with a sequence number and its send time; latency is POST to delivery. "max": closed loop, the next broadcast is POSTed as soon as fewer than 4 are still on their way to some subscriber (throughput); "N/s": a fixed rate of ${fmt(ctx.fanoutDeliveries)} deliveries/s (latency under a steady load). ${ctx.rounds} round(s), each measuring every server once (in a rotated order): means over the rounds ("lost" and "duplicated": totals), and each round's ratio to bare uWS of server CPU per delivery (the spread).`,
    columns: ['server', 'subscribers', 'broadcasts', 'deliveries/s', 'vs uWS', 'vs ws', 'p50 ms', 'p99 ms', 'lost', 'duplicated', 'load CPU (cores)', 'server CPU (cores)', 'server µs / delivery', 'vs uWS (cost)', 'each round vs uWS (cost)', 'vs ws (cost)'],
    rows,
    notes: [
      'Server and load generator share this machine\'s cores, and every delivery crosses loopback TCP twice in the kernel, so at "max" all servers hit the same ceiling; "server µs / delivery" (server CPU time per delivered frame) is the efficiency figure that does not depend on who saturated.',
    ],
  };
}
