/**
 * Scenario 3, connect storm: N authenticated connections opened as fast as
 * possible: connects/s, failures, and the server's RSS per open connection
 * (summed over all its processes, measured after the storm settles and a
 * forced full GC).
 */
import type { Ctx } from '../lib/context.js';
import type { Fleet } from '../lib/fleet.js';
import { settledRssKiB } from '../lib/procs.js';
import { fmt, ratio } from '../lib/stats.js';
import { startTarget, widgetPath } from '../lib/targets.js';
import type { Table } from '../lib/report.js';

export async function run(ctx: Ctx, fleet: Fleet): Promise<Table> {
  const res: Record<string, { perSec: number; failed: number; kib: number; opened: number }> = {};
  for (const name of ctx.targets) {
    const target = await startTarget(name, ctx.workers);
    try {
      await new Promise((r) => setTimeout(r, 500));
      const before = await settledRssKiB(target.proc.pid!);
      const o = await fleet.open(target.port, widgetPath('storm'), ctx.stormN, 512);
      await new Promise((r) => setTimeout(r, 2000));
      const after = await settledRssKiB(target.proc.pid!);
      res[name] = { perSec: (o.opened / o.ms) * 1000, failed: o.failed, kib: (after - before) / Math.max(1, o.opened), opened: o.opened };
      process.stderr.write(`storm ${name}: ${fmt(res[name]!.perSec)} connects/s, ${o.failed} failed, ${res[name]!.kib.toFixed(2)} KiB/conn\n`);
      await fleet.closeAll();
    } finally {
      await target.stop();
    }
  }
  return {
    title: 'Connect storm',
    method: `${fmt(ctx.stormN)} authenticated connections opened as fast as possible (512 handshakes in flight per load process); a connection counts once its first frame arrives. RSS per connection = growth of the server's total RSS (all processes) / connections, 2 s after the storm, each read 1 s after a forced full GC in every server process (SIGUSR2 with --expose-gc, bench/lib/gc-preload.cjs).`,
    columns: ['server', 'opened', 'connects/s', 'vs uWS', 'failed', 'RSS KiB / connection'],
    rows: ctx.targets.map((n) => [n, fmt(res[n]!.opened), fmt(res[n]!.perSec), ratio(res[n]!.perSec, res.uws?.perSec ?? NaN), fmt(res[n]!.failed), res[n]!.kib.toFixed(2)]),
    notes: [],
  };
}
