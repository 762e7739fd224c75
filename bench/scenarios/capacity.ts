/**
 * Issue 14's capacity run: BENCH_CAPACITY_CONNS authenticated idle
 * connections (default 100,000) on this one host, then broadcasts to all of
 * them; embedded, on one Redis, and on a Redis Cluster (3 masters, 3
 * replicas). The file-descriptor limit is 20,000 per process, so the gateway
 * runs BENCH_CAPACITY_WORKERS workers (8) and the load is spread over
 * processes of at most 14,000 connections each, every one from its own
 * 127.0.0.x addresses.
 *
 * Reported: connects/s, RSS per connection (the gateway's processes, after
 * the connects settle and a forced full GC), /api/v1/stats total, Redis memory per connection
 * (used_memory growth: the registry), and the broadcast to everyone:
 * deliveries/s and p99 delivery latency. Also the Redis commands per 10,000
 * connects (INFO commandstats), the figure the per-node inboxes cut.
 */
import { Redis } from 'ioredis';
import type { Ctx } from '../lib/context.js';
import { Fleet } from '../lib/fleet.js';
import { measureFanout } from '../lib/measure.js';
import { settledRssKiB } from '../lib/procs.js';
import { fmt } from '../lib/stats.js';
import { startTarget, widgetPath } from '../lib/targets.js';
import type { Table } from '../lib/report.js';
import { startRedis } from '../lib/redis.js';
import { startRedisCluster } from '../../test/helpers/redis-cluster.js';

const PER_LOAD_PROC = 14_000;

async function redisCommands(clients: Redis[]): Promise<number> {
  let n = 0;
  for (const c of clients) {
    const info = await c.info('commandstats');
    for (const m of info.matchAll(/calls=(\d+)/g)) n += Number(m[1]);
  }
  return n;
}

async function usedMemory(clients: Redis[]): Promise<number> {
  let n = 0;
  for (const c of clients) n += Number(/used_memory:(\d+)/.exec(await c.info('memory'))![1]);
  return n;
}

export async function run(ctx: Ctx): Promise<Table> {
  const conns = Number(process.env.BENCH_CAPACITY_CONNS ?? (ctx.smoke ? 400 : 100_000));
  const workers = Number(process.env.BENCH_CAPACITY_WORKERS ?? (ctx.smoke ? 2 : 8));
  const fleet = await Fleet.start(Math.max(2, Math.ceil(conns / PER_LOAD_PROC)));
  const rows: string[][] = [];
  try {
    for (const mode of ctx.smoke ? (['embedded'] as const) : (['embedded', 'Redis', 'Redis Cluster'] as const)) {
      let env: Record<string, string> = {};
      let stopRedis = async (): Promise<void> => {};
      let clients: Redis[] = [];
      if (mode === 'Redis') {
        const r = await startRedis();
        env = { REDIS_URL: r.url };
        clients = [new Redis(r.url)];
        stopRedis = async () => r.stop();
      } else if (mode === 'Redis Cluster') {
        const rc = await startRedisCluster();
        env = { REDIS_CLUSTER_NODES: rc.nodes };
        clients = (await rc.masters()).map((s) => new Redis(s.port));
        stopRedis = () => rc.stop();
      }
      const target = await startTarget('gateway', workers, { ...env, CONNECT_RATE_PER_IP: '0', MAX_CONNECTIONS_PER_IP: '0', IDLE_TIMEOUT_S: '600' }, `capacity ${mode}`);
      try {
        await new Promise((r) => setTimeout(r, 500));
        const rss0 = await settledRssKiB(target.proc.pid!);
        const mem0 = clients.length ? await usedMemory(clients) : 0;
        const cmd0 = clients.length ? await redisCommands(clients) : 0;
        const o = await fleet.open(target.port, widgetPath('cap'), conns, 512);
        if (o.failed) process.stderr.write(`capacity ${mode}: ${o.failed} connects failed ${JSON.stringify(o.codes)}\n`);
        await new Promise((r) => setTimeout(r, 3000)); // registry batches, RSS settles
        const cmd1 = clients.length ? await redisCommands(clients) : 0;
        const mem1 = clients.length ? await usedMemory(clients) : 0;
        const rss1 = await settledRssKiB(target.proc.pid!);
        const total = ((await (await fetch(`http://127.0.0.1:${target.port}/api/v1/stats`)).json()) as { total_connections: number }).total_connections;
        const fan = await measureFanout(fleet, [target], o.opened, 0, ctx.durationMs, 2, { creator: 'cap', alreadyOpen: true, maxBroadcasts: ctx.smoke ? 50 : 200 });
        process.stderr.write(`capacity ${mode}: ${fmt(o.opened)} open at ${fmt((o.opened / o.ms) * 1000)}/s, ${((rss1 - rss0) / o.opened).toFixed(2)} KiB/conn, stats ${total}, broadcast ${fmt(fan.deliveredPerSec)} deliveries/s p99 ${fmt(fan.p99, 1)} ms\n`);
        rows.push([
          mode,
          fmt(workers),
          `${fmt(o.opened)} / ${fmt(conns)}`,
          fmt((o.opened / o.ms) * 1000),
          ((rss1 - rss0) / Math.max(1, o.opened)).toFixed(2),
          fmt(total),
          clients.length ? fmt((mem1 - mem0) / Math.max(1, o.opened)) : '-',
          clients.length ? fmt(((cmd1 - cmd0) / Math.max(1, o.opened)) * 10_000) : '-',
          fmt(fan.broadcasts),
          fmt(fan.deliveredPerSec),
          fmt(fan.p50, 1),
          fmt(fan.p99, 1),
          fmt(fan.lost),
          fan.loadCores.toFixed(2),
          fan.serverCores.toFixed(2),
        ]);
      } finally {
        await fleet.closeAll().catch(() => {});
        await target.stop();
        for (const c of clients) c.disconnect();
        await stopRedis();
      }
    }
  } finally {
    fleet.stop();
  }
  return {
    title: 'Capacity: idle connections and a broadcast to all',
    method: `${fmt(conns)} authenticated widget.v1 connections of one creator, opened 512 at a time per load process (${fleet.procs.length} processes, each from its own 127.0.0.x addresses), to a ${workers}-worker gateway; then broadcasts to all of them in a closed loop (at most 2 not yet everywhere) for ${ctx.durationMs / 1000} s. RSS per connection: growth of all gateway processes' RSS over the connects, 3 s after them, each read 1 s after a forced full GC in every gateway process (as in the storm). Redis bytes per connection: used_memory growth (all masters), i.e. the registry. Commands per 10,000 connects: INFO commandstats growth (all masters) over the connects, everything included (registry batches, leases, sweeps, pings).`,
    columns: ['mode', 'workers', 'open / asked', 'connects/s', 'RSS KiB/conn', '/api/v1/stats total', 'Redis bytes/conn', 'Redis commands per 10k connects', 'broadcasts', 'deliveries/s', 'p50 ms', 'p99 ms', 'lost', 'load CPU (cores)', 'server CPU (cores)'],
    rows,
    notes: [],
  };
}
