/**
 * Cross-host fan-out (Redis mode): subscribers split over two gateway
 * "hosts" (two clusters on different ports sharing one redis-server started
 * here), broadcasts POSTed alternately to each; beside it, the same run's
 * single-host figures (embedded mode, and Redis mode with one host).
 */
import type { Ctx } from '../lib/context.js';
import type { Fleet } from '../lib/fleet.js';
import { measureFanout, type FanoutResult } from '../lib/measure.js';
import { fmt, ratio } from '../lib/stats.js';
import { startTarget, type Target } from '../lib/targets.js';
import type { Table } from '../lib/report.js';
import { startRedis } from '../lib/redis.js';
import { startRedisCluster } from '../../test/helpers/redis-cluster.js';

export async function run(ctx: Ctx, fleet: Fleet): Promise<Table> {
  const rows: string[][] = [];
  const clusterVsOne: string[] = [];
  const hostWorkers = Math.max(1, Math.floor(ctx.workers / 2));
  for (const subs of ctx.fanoutSubs) {
    for (const rate of ctx.smoke ? [0] : [0, Math.max(1, Math.round(ctx.fanoutDeliveries / subs))]) {
    const setups: Array<[string, () => Promise<{ targets: Target[]; stop(): Promise<void> }>]> = [
      ['1 host, embedded', async () => {
        const t = await startTarget('gateway', ctx.workers);
        return { targets: [t], stop: () => t.stop() };
      }],
      [`1 host, Redis`, async () => {
        const r = await startRedis();
        const t = await startTarget('gateway', ctx.workers, { REDIS_URL: r.url });
        return { targets: [t], stop: async () => { await t.stop(); r.stop(); } };
      }],
      [`2 hosts x ${hostWorkers} worker(s), Redis`, async () => {
        const r = await startRedis();
        const a = await startTarget('gateway', hostWorkers, { REDIS_URL: r.url }, 'host A');
        const b = await startTarget('gateway', hostWorkers, { REDIS_URL: r.url }, 'host B');
        return { targets: [a, b], stop: async () => { await a.stop(); await b.stop(); r.stop(); } };
      }],
      [`2 hosts x ${hostWorkers} worker(s), Redis Cluster (3+3)`, async () => {
        const rc = await startRedisCluster();
        const a = await startTarget('gateway', hostWorkers, { REDIS_CLUSTER_NODES: rc.nodes }, 'host A');
        const b = await startTarget('gateway', hostWorkers, { REDIS_CLUSTER_NODES: rc.nodes }, 'host B');
        return { targets: [a, b], stop: async () => { await a.stop(); await b.stop(); await rc.stop(); } };
      }],
    ];
    let single: FanoutResult | undefined;
    let oneRedis: FanoutResult | undefined;
    // Smoke: one host embedded, and the two cross-host setups (each code path once).
    for (const [label, setup] of ctx.smoke ? setups.filter(([l]) => l !== '1 host, Redis') : setups) {
      const s = await setup();
      let r: FanoutResult;
      try {
        r = await measureFanout(fleet, s.targets, subs, rate, ctx.durationMs);
      } finally {
        await s.stop();
      }
      single ??= r;
      if (label.startsWith('2 hosts') && label.endsWith(', Redis')) oneRedis = r;
      if (label.includes('Cluster') && oneRedis) clusterVsOne.push(`S=${fmt(subs)} ${rate ? `${rate}/s` : 'max'}: ${ratio(r.deliveredPerSec, oneRedis.deliveredPerSec)} the deliveries/s of 2 hosts on one Redis (p99 ${fmt(r.p99, 1)} against ${fmt(oneRedis.p99, 1)} ms)`);
      process.stderr.write(`crosshost ${label} S=${subs} ${rate || 'max'}: ${fmt(r.deliveredPerSec)} deliveries/s lost ${r.lost} p99 ${fmt(r.p99, 1)} ms\n`);
      rows.push([label, fmt(subs), rate ? `${rate}/s` : `max (${fmt(r.broadcasts / (ctx.durationMs / 1000))}/s)`, fmt(r.deliveredPerSec), ratio(r.deliveredPerSec, single.deliveredPerSec), fmt(r.p50, 1), fmt(r.p99, 1), fmt(r.lost), fmt(r.dup), r.loadCores.toFixed(2), r.serverCores.toFixed(2)]);
    }
    }
  }
  return {
    title: 'Cross-host fan-out (Redis)',
    method: `Subscribers split evenly over the hosts; broadcasts POSTed alternately to each host for ${ctx.durationMs / 1000} s: "max" in a closed loop (at most 4 broadcasts not yet delivered everywhere: broadcasts/s is the throughput), "N/s" at a fixed rate (latency under steady load). All hosts run on this one machine, so "2 hosts" shares its 2 cores: the figure shows the cost of the Redis hop, not the capacity of two machines.`,
    columns: ['setup', 'subscribers', 'broadcasts', 'deliveries/s', 'vs 1 host embedded', 'p50 ms', 'p99 ms', 'lost', 'duplicated', 'load CPU (cores)', 'server CPU (cores)'],
    rows,
    notes: clusterVsOne.length ? ['Redis Cluster against one Redis, same run:\n', ...clusterVsOne.map((l) => `- ${l}`)] : [],
  };
}
