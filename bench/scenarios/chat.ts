/**
 * Scenario 1, chat: C connections each send a user_message and wait for the
 * ai_response (echo engine) before sending the next: responses/s and round
 * trip p50/p99/max, for the gateway and both baselines.
 */
import type { Ctx } from '../lib/context.js';
import type { Fleet } from '../lib/fleet.js';
import { measureChat, type ChatResult } from '../lib/measure.js';
import { fmt, inRounds, mean, ratio, ratios } from '../lib/stats.js';
import { startTarget } from '../lib/targets.js';
import type { Table } from '../lib/report.js';

export async function run(ctx: Ctx, fleet: Fleet): Promise<Table> {
  const rows: string[][] = [];
  const notes: string[] = [];
  for (const conns of ctx.chatConns) {
    const results = await inRounds(ctx.rounds, ctx.targets, async (name, round) => {
      const target = await startTarget(name, ctx.workers);
      let r: ChatResult;
      try {
        r = await measureChat(fleet, target, conns, { durationMs: ctx.durationMs, warmupMs: ctx.warmupMs });
      } finally {
        await target.stop();
      }
      process.stderr.write(`chat ${name} C=${conns} round ${round + 1}: ${fmt(r.perSec)} resp/s p99 ${fmt(r.p99, 2)} ms load ${r.loadCores.toFixed(2)} cores\n`);
      if (r.failed) notes.push(`${name} C=${conns}: ${r.failed} connections failed to open`);
      if (r.errors) notes.push(`${name} C=${conns}: ${r.errors} error frames`);
      return r;
    });
    const runs: Record<string, ChatResult[]> = Object.fromEntries(ctx.targets.map((n, i) => [n, results[i]!]));
    const avg = (name: string, f: (r: ChatResult) => number) => mean(runs[name]!.map(f));
    const us = (r: ChatResult) => (r.serverCores / r.perSec) * 1e6;
    const uws = runs.uws;
    for (const name of ctx.targets) {
      const rs = runs[name]!;
      rows.push([
        name,
        String(conns),
        fmt(avg(name, (r) => r.perSec)),
        ratio(avg(name, (r) => r.perSec), uws ? avg('uws', (r) => r.perSec) : NaN),
        ratio(avg(name, (r) => r.perSec), runs.ws ? avg('ws', (r) => r.perSec) : NaN),
        fmt(avg(name, (r) => r.p50), 2),
        ratio(avg(name, (r) => r.p50), uws ? avg('uws', (r) => r.p50) : NaN),
        fmt(avg(name, (r) => r.p99), 2),
        ratio(avg(name, (r) => r.p99), uws ? avg('uws', (r) => r.p99) : NaN),
        fmt(Math.max(...rs.map((r) => r.max)), 1),
        avg(name, (r) => r.loadCores).toFixed(2),
        avg(name, (r) => r.serverCores).toFixed(2),
        fmt(avg(name, us), 1),
        `${ratios(rs.map(us), uws?.map(us))}; ${ratios(rs.map((r) => r.perSec), uws?.map((r) => r.perSec))}`,
      ]);
    }
  }
  return {
    title: 'Chat: user_message -> typing, ai_response, typing (echo engine)',
    method: `Closed loop: each connection sends one user_message and waits for its ai_response before the next; ${ctx.durationMs / 1000} s measured after 1 s of warm-up. ${ctx.rounds} round(s), each measuring every server once (in a rotated order); figures are the means over the rounds, "max" the largest. Ratios against bare uWS and ws measured in the same run; the last column gives each round's ratio to bare uWS of server CPU per response, then of responses/s (the spread).`,
    columns: ['server', 'connections', 'responses/s', 'vs uWS', 'vs ws', 'p50 ms', 'p50 vs uWS', 'p99 ms', 'p99 vs uWS', 'max ms', 'load CPU (cores)', 'server CPU (cores)', 'server µs / response', 'each round vs uWS: µs / response; responses/s'],
    rows,
    notes,
  };
}
