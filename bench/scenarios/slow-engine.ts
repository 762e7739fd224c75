/**
 * Scenario 5, a slow AI engine: BENCH_SLOW_SESSIONS concurrent chatting
 * sessions (default 5000), each sending a message BENCH_SLOW_THINK_MS after
 * its last answer, against a mock engine that takes 200 ms per answer.
 * Sustained means: no errors, and answers in about 200 ms (an event-loop
 * stall shows as a p99/max far above it).
 */
import type { Ctx } from '../lib/context.js';
import type { Fleet } from '../lib/fleet.js';
import { measureChat } from '../lib/measure.js';
import { fmt } from '../lib/stats.js';
import { startMockEngine, startTarget } from '../lib/targets.js';
import type { Table } from '../lib/report.js';

export async function run(ctx: Ctx, fleet: Fleet): Promise<Table> {
  const engine = await startMockEngine({ DELAY_MS: '200' });
  const target = await startTarget('gateway', ctx.workers, {
    AI_ENGINE_URL: engine.url,
    AI_ENGINE_MAX_INFLIGHT: String(ctx.slowSessions),
    // Every session chats with one creator here; the per-creator bound (256 per
    // worker by default) would otherwise refuse most of them, by design.
    AI_ENGINE_MAX_INFLIGHT_PER_CREATOR: String(ctx.slowSessions),
  });
  try {
    const r = await measureChat(fleet, target, ctx.slowSessions, { durationMs: ctx.durationMs, warmupMs: ctx.smoke ? ctx.warmupMs : 2000, thinkMs: ctx.slowThinkMs });
    process.stderr.write(`slow engine: ${fmt(r.perSec)} resp/s errors ${r.errors} p99 ${fmt(r.p99, 1)} ms\n`);
    return {
      title: 'Slow AI engine (200 ms per answer)',
      method: `${fmt(ctx.slowSessions)} sessions of one creator (AI_ENGINE_MAX_INFLIGHT and _PER_CREATOR raised to match), each sending a user_message ${ctx.slowThinkMs} ms after its previous answer, against a mock engine (bench/lib/mock-engine.ts, its own process) that answers after 200 ms. Round trip includes the 200 ms.`,
      columns: ['sessions', 'opened', 'responses/s', 'errors', 'p50 ms', 'p99 ms', 'max ms', 'load CPU (cores)', 'gateway CPU (cores)'],
      rows: [[fmt(ctx.slowSessions), fmt(r.opened), fmt(r.perSec), fmt(r.errors), fmt(r.p50, 1), fmt(r.p99, 1), fmt(r.max, 1), r.loadCores.toFixed(2), r.serverCores.toFixed(2)]],
      notes: [],
    };
  } finally {
    await target.stop();
    engine.proc.kill('SIGKILL');
  }
}
