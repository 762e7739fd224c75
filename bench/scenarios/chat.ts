/**
 * Scenario 1, chat: C connections each send a user_message and wait for the
 * ai_response (echo engine) before sending the next: responses/s and round
 * trip p50/p99/max, for the gateway and both baselines.
 */
import type { Ctx } from '../lib/context.js';
import type { Fleet } from '../lib/fleet.js';
import { measureChat, type ChatResult } from '../lib/measure.js';
import { fmt, ratio } from '../lib/stats.js';
import { startTarget } from '../lib/targets.js';
import type { Table } from '../lib/report.js';

export async function run(ctx: Ctx, fleet: Fleet): Promise<Table> {
  const rows: string[][] = [];
  const notes: string[] = [];
  for (const conns of ctx.chatConns) {
    const res: Partial<Record<string, ChatResult>> = {};
    for (const name of ctx.targets) {
      const target = await startTarget(name, ctx.workers);
      try {
        res[name] = await measureChat(fleet, target, conns, { durationMs: ctx.durationMs, warmupMs: ctx.warmupMs });
      } finally {
        await target.stop();
      }
      const r = res[name]!;
      process.stderr.write(`chat ${name} C=${conns}: ${fmt(r.perSec)} resp/s p99 ${fmt(r.p99, 2)} ms load ${r.loadCores.toFixed(2)} cores\n`);
      if (r.failed) notes.push(`${name} C=${conns}: ${r.failed} connections failed to open`);
      if (r.errors) notes.push(`${name} C=${conns}: ${r.errors} error frames`);
    }
    for (const name of ctx.targets) {
      const r = res[name]!;
      rows.push([
        name,
        String(conns),
        fmt(r.perSec),
        ratio(r.perSec, res.uws?.perSec ?? NaN),
        ratio(r.perSec, res.ws?.perSec ?? NaN),
        fmt(r.p50, 2),
        fmt(r.p99, 2),
        ratio(r.p99, res.uws?.p99 ?? NaN),
        fmt(r.max, 1),
        r.loadCores.toFixed(2),
        r.serverCores.toFixed(2),
        fmt((r.serverCores / r.perSec) * 1e6, 1),
      ]);
    }
  }
  return {
    title: 'Chat: user_message -> typing, ai_response, typing (echo engine)',
    method: `Closed loop: each connection sends one user_message and waits for its ai_response before the next; ${ctx.durationMs / 1000} s measured after 1 s of warm-up. Ratios against bare uWS and ws measured in the same run.`,
    columns: ['server', 'connections', 'responses/s', 'vs uWS', 'vs ws', 'p50 ms', 'p99 ms', 'p99 vs uWS', 'max ms', 'load CPU (cores)', 'server CPU (cores)', 'server µs / response'],
    rows,
    notes,
  };
}
