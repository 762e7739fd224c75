/**
 * Scenario 3, connect storm: N authenticated connections opened as fast as
 * possible: connects/s, failures, and the server's RSS per open connection
 * (summed over all its processes, measured after the storm settles and a
 * forced full GC).
 */
import type { Ctx } from '../lib/context.js';
import type { Fleet } from '../lib/fleet.js';
import { settledRssKiB, usage } from '../lib/procs.js';
import { fmt, inRounds, mean, ratio, ratios } from '../lib/stats.js';
import { startTarget, widgetPath } from '../lib/targets.js';
import type { Table } from '../lib/report.js';

export async function run(ctx: Ctx, fleet: Fleet): Promise<Table> {
  const results = await inRounds(ctx.rounds, ctx.targets, async (name, round) => {
    const target = await startTarget(name, ctx.workers);
    try {
      await new Promise((r) => setTimeout(r, 500));
      const before = await settledRssKiB(target.proc.pid!);
      const [s0, l0] = [usage(target.proc.pid!), fleet.procs.map((p) => usage(p.pid!))];
      const o = await fleet.open(target.port, widgetPath('storm'), ctx.stormN, 512);
      const [s1, l1] = [usage(target.proc.pid!), fleet.procs.map((p) => usage(p.pid!))];
      await new Promise((r) => setTimeout(r, 2000));
      const after = await settledRssKiB(target.proc.pid!);
      const r = {
        perSec: (o.opened / o.ms) * 1000,
        failed: o.failed,
        kib: (after - before) / Math.max(1, o.opened),
        opened: o.opened,
        // CPU of the storm (the connects, and what the server does after each until the load has seen them all), per connection: a figure that does not depend on which side saturated.
        cpuUs: ((s1.cpuMs - s0.cpuMs) * 1000) / Math.max(1, o.opened),
        loadCores: l1.reduce((a, u, i) => a + u.cpuMs - l0[i]!.cpuMs, 0) / o.ms,
      };
      process.stderr.write(`storm ${name} round ${round + 1}: ${fmt(r.perSec)} connects/s, ${o.failed} failed, ${r.kib.toFixed(2)} KiB/conn, ${r.cpuUs.toFixed(1)} µs server CPU/conn, load ${r.loadCores.toFixed(2)} cores\n`);
      await fleet.closeAll();
      return r;
    } finally {
      await target.stop();
    }
  });
  const res = Object.fromEntries(ctx.targets.map((n, i) => [n, results[i]!]));
  const avg = (name: string, f: (r: (typeof res)[string][number]) => number) => mean(res[name]!.map(f));
  const total = (name: string, f: (r: (typeof res)[string][number]) => number) => res[name]!.reduce((a, r) => a + f(r), 0);
  return {
    title: 'Connect storm',
    method: `${fmt(ctx.stormN)} authenticated connections opened as fast as possible (512 handshakes in flight per load process); a connection counts once its first frame arrives. RSS per connection = growth of the server's total RSS (all processes) / connections, 2 s after the storm, each read 1 s after a forced full GC in every server process (SIGUSR2 with --expose-gc, bench/lib/gc-preload.cjs). ${ctx.rounds} round(s), each measuring every server once (in a rotated order): means over the rounds ("opened" and "failed": totals), and each round's ratio to bare uWS. Server CPU per connection: all the server's processes, from the first connect to the last connection's first frame (/proc, 10 ms ticks); load CPU: the load processes over the same time.`,
    columns: ['server', 'opened', 'connects/s', 'vs uWS', 'each round vs uWS', 'failed', 'server CPU µs / connection', 'vs uWS', 'load CPU (cores)', 'RSS KiB / connection', 'each round RSS KiB / connection'],
    rows: ctx.targets.map((n) => [
      n,
      fmt(total(n, (r) => r.opened)),
      fmt(avg(n, (r) => r.perSec)),
      ratio(avg(n, (r) => r.perSec), res.uws ? avg('uws', (r) => r.perSec) : NaN),
      ratios(res[n]!.map((r) => r.perSec), res.uws?.map((r) => r.perSec)),
      fmt(total(n, (r) => r.failed)),
      avg(n, (r) => r.cpuUs).toFixed(1),
      ratio(avg(n, (r) => r.cpuUs), res.uws ? avg('uws', (r) => r.cpuUs) : NaN),
      avg(n, (r) => r.loadCores).toFixed(2),
      avg(n, (r) => r.kib).toFixed(2),
      res[n]!.map((r) => r.kib.toFixed(2)).join(' / '),
    ]),
    notes: [],
  };
}
