/**
 * Issue 4's benchmark: where frames are validated.
 *  1. Throughput and round trip p50/p99 for VALIDATION_MODE inline, pool and
 *     auto at frame sizes 64 B, 1 KiB, 16 KiB and 60 KiB (chat, echo engine).
 *  2. The point of the pool: p99 round trip of 100 small-message clients
 *     while 10 other clients send 60 KiB frames as fast as they are answered,
 *     inline versus auto, beside the small clients' p99 with no large senders.
 */
import type { Ctx } from '../lib/context.js';
import { Fleet } from '../lib/fleet.js';
import { measureChat } from '../lib/measure.js';
import { fmt, percentiles, ratio } from '../lib/stats.js';
import { startTarget, widgetPath } from '../lib/targets.js';
import type { Table } from '../lib/report.js';

const SIZES = [64, 1024, 16 * 1024, 60 * 1024];
const MODES = ['inline', 'pool', 'auto'] as const;

/** A user_message whose whole frame is about `bytes` long. */
const contentOf = (bytes: number) => 'x'.repeat(Math.max(1, bytes - '{"type":"user_message","content":""}'.length));

export async function run(ctx: Ctx, fleet: Fleet): Promise<Table> {
  const rows: string[][] = [];
  const conns = Number(process.env.BENCH_VALIDATION_CONNS ?? 100);
  for (const size of ctx.smoke ? [SIZES[0]!] : SIZES) {
    const inline = { perSec: NaN };
    for (const mode of MODES) {
      const target = await startTarget('gateway', ctx.workers, { VALIDATION_MODE: mode }, `gateway ${mode}`);
      try {
        const r = await measureChat(fleet, target, conns, { durationMs: ctx.durationMs, warmupMs: ctx.warmupMs, content: contentOf(size) });
        if (mode === 'inline') inline.perSec = r.perSec;
        rows.push([`${mode}`, fmt(size), fmt(r.perSec), ratio(r.perSec, inline.perSec), fmt(r.p50, 2), fmt(r.p99, 2), fmt(r.errors), r.loadCores.toFixed(2), r.serverCores.toFixed(2)]);
        process.stderr.write(`validation ${mode} ${size} B: ${fmt(r.perSec)} resp/s p99 ${fmt(r.p99, 2)} ms\n`);
      } finally {
        await target.stop();
      }
    }
  }

  // Mixed load: 100 small clients (one load process) with and without 10 large senders (another).
  const big = await Fleet.start(1);
  const small = await Fleet.start(1);
  const mixed: string[][] = [];
  try {
    for (const mode of ctx.smoke ? (['auto'] as const) : (['inline', 'auto'] as const)) {
      const target = await startTarget('gateway', ctx.workers, { VALIDATION_MODE: mode }, `gateway ${mode}`);
      try {
        const alone = await measureChat(small, target, 100, { durationMs: ctx.durationMs, warmupMs: ctx.warmupMs, content: contentOf(64) });
        await big.open(target.port, widgetPath('bench'), 10);
        await small.open(target.port, widgetPath('bench'), 100);
        const run = (f: Fleet, content: string) =>
          f.all<{ responses: number; ms: number; samples: number[] }>(() => ({ op: 'chat', durationMs: ctx.durationMs, warmupMs: ctx.warmupMs, thinkMs: 0, content }));
        const [smallRes, bigRes] = await Promise.all([run(small, contentOf(64)), run(big, contentOf(60 * 1024))]);
        await Promise.all([small.closeAll(), big.closeAll()]);
        const p = percentiles(smallRes.flatMap((a) => a.samples));
        const smallPerSec = (smallRes.reduce((a, b) => a + b.responses, 0) / smallRes[0]!.ms) * 1000;
        const bigPerSec = (bigRes.reduce((a, b) => a + b.responses, 0) / bigRes[0]!.ms) * 1000;
        mixed.push([mode, fmt(alone.p99, 2), fmt(p.p99, 2), ratio(p.p99, alone.p99), fmt(smallPerSec), fmt(bigPerSec)]);
        process.stderr.write(`validation mixed ${mode}: small p99 ${fmt(alone.p99, 2)} -> ${fmt(p.p99, 2)} ms with 10 x 60 KiB senders\n`);
      } finally {
        await target.stop();
      }
    }
  } finally {
    big.stop();
    small.stop();
  }
  return {
    title: 'Validation: inline, pool, auto',
    method: `${conns} chat connections per run, each frame of the given size (echo engine: the answer is as large). Then 100 small-message clients (64 B), alone and beside 10 clients sending 60 KiB frames as fast as they are answered, in separate load processes.`,
    columns: ['mode', 'frame bytes', 'responses/s', 'vs inline', 'p50 ms', 'p99 ms', 'errors', 'load CPU (cores)', 'server CPU (cores)'],
    rows,
    notes: [
      'Mixed load, small clients\' round trip:\n',
      `| mode | small p99 alone (ms) | small p99 with 60 KiB senders (ms) | ratio | small responses/s | large responses/s |`,
      '|---|---|---|---|---|---|',
      ...mixed.map((r) => `| ${r.join(' | ')} |`),
    ],
  };
}
