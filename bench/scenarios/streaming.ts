/**
 * Issue 12's benchmark: streamed answers. BENCH_STREAMS widget.v2 sessions
 * (default 1,000) each ask a mock engine (bench/lib/mock-engine.ts, its own
 * process) that streams BENCH_STREAM_PIECES pieces (200) BENCH_PIECE_MS
 * apart (50), so that many answers stream at once, all the time. Each piece
 * carries the time the engine wrote it; the client subtracts it from when
 * the piece arrived (in a chunk): the latency the gateway adds, the
 * engine's pacing excluded. Beside it, the same gateway's CPU per chat
 * response (echo engine, 100 connections, widget.v1), for the "CPU per
 * relayed piece" ratio.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Ctx } from '../lib/context.js';
import type { Fleet } from '../lib/fleet.js';
import { measureChat } from '../lib/measure.js';
import { usage } from '../lib/procs.js';
import { fmt, percentiles, ratio } from '../lib/stats.js';
import { freePort, startTarget, widgetPath } from '../lib/targets.js';
import type { Table } from '../lib/report.js';
import { startRedis } from '../lib/redis.js';

async function startEngine(pieces: number, pieceMs: number, firstMs: number): Promise<{ port: number; proc: ChildProcess }> {
  const port = await freePort();
  const proc = fork(fileURLToPath(new URL('../lib/mock-engine.ts', import.meta.url)), {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, PORT: String(port), DELAY_MS: String(firstMs), PIECES: String(pieces), PIECE_MS: String(pieceMs) },
  });
  await new Promise((r) => proc.once('message', r));
  return { port, proc };
}

export async function run(ctx: Ctx, fleet: Fleet): Promise<Table> {
  const streams = Number(process.env.BENCH_STREAMS ?? (ctx.smoke ? 20 : 1000));
  const pieces = Number(process.env.BENCH_STREAM_PIECES ?? (ctx.smoke ? 20 : 200));
  const pieceMs = Number(process.env.BENCH_PIECE_MS ?? (ctx.smoke ? 10 : 50));
  const firstMs = 20;
  const engine = await startEngine(pieces, pieceMs, firstMs);
  const redis = await startRedis();
  const rows: string[][] = [];
  try {
    const modes: Array<[string, Record<string, string>]> = [
      ['embedded', {}],
      ['Redis', { REDIS_URL: redis.url, REDIS_PREFIX: 'benchstream:' }],
    ];
    for (const [label, env] of ctx.smoke ? modes.slice(0, 1) : modes) {
      // The same gateway's CPU per chat response (echo engine: no AI_ENGINE_URL).
      const plain = await startTarget('gateway', ctx.workers, { ...env }, `${label} chat`);
      let chatUs: number;
      try {
        const chat = await measureChat(fleet, plain, 100, { durationMs: ctx.durationMs, warmupMs: ctx.warmupMs });
        chatUs = (chat.serverCores / chat.perSec) * 1e6;
      } finally {
        await plain.stop();
      }

      const target = await startTarget(
        'gateway',
        ctx.workers,
        {
          ...env,
          AI_ENGINE_URL: `http://127.0.0.1:${engine.port}/answer`,
          AI_ENGINE_MAX_INFLIGHT: String(streams * 2),
          AI_ENGINE_MAX_INFLIGHT_PER_CREATOR: String(streams * 2),
          AI_ENGINE_CONNECTIONS: String(Math.max(64, streams)),
        },
        `${label} streaming`,
      );
      try {
        const o = await fleet.open(target.port, widgetPath('stream'), streams, 256, 'widget.v2');
        if (o.failed) throw new Error(`${o.failed} sessions failed to connect`);
        const u0 = usage(target.proc.pid!);
        const t0 = Date.now();
        const answers = await fleet.all<{ pieces: number; answers: number; errors: number; ms: number; cpuMs: number; samples: number[]; first: number[]; firstRaw: number[] }>(() => ({
          op: 'stream',
          durationMs: ctx.durationMs,
          warmupMs: Math.max(ctx.warmupMs, firstMs + 2 * pieceMs),
          content: 'stream me an answer',
        }));
        const u1 = usage(target.proc.pid!);
        const wall = Date.now() - t0;
        await fleet.closeAll();
        const ms = Math.max(...answers.map((a) => a.ms));
        const n = answers.reduce((a, b) => a + b.pieces, 0);
        const errors = answers.reduce((a, b) => a + b.errors, 0);
        const perSec = (n / ms) * 1000;
        const p = percentiles(answers.flatMap((a) => a.samples));
        const first = percentiles(answers.flatMap((a) => a.first));
        const firstRaw = percentiles(answers.flatMap((a) => a.firstRaw));
        const serverCores = (u1.cpuMs - u0.cpuMs) / wall;
        const pieceUs = (serverCores / perSec) * 1e6;
        const loadCores = answers.reduce((a, b) => a + b.cpuMs, 0) / ms;
        process.stderr.write(`streaming ${label}: ${fmt(perSec)} pieces/s, added p50 ${fmt(p.p50, 2)} p99 ${fmt(p.p99, 2)} ms, ${fmt(pieceUs, 1)} us/piece vs ${fmt(chatUs, 1)} us/response\n`);
        rows.push([
          label,
          fmt(streams),
          fmt(perSec),
          fmt(p.p50, 2),
          fmt(p.p99, 2),
          fmt(p.max, 1),
          fmt(pieceUs, 1),
          fmt(chatUs, 1),
          ratio(pieceUs, chatUs),
          `${fmt(firstRaw.p50, 1)} / ${fmt(firstRaw.p99, 1)}`,
          `${fmt(first.p50, 2)} / ${fmt(first.p99, 2)}`,
          fmt(errors),
          loadCores.toFixed(2),
          serverCores.toFixed(2),
        ]);
      } finally {
        await target.stop();
      }
    }
  } finally {
    engine.proc.kill();
    redis.stop();
  }
  return {
    title: 'Streamed answers',
    method: `${fmt(streams)} widget.v2 sessions, each asking again as soon as its answer is complete, so ${fmt(streams)} answers stream at once; the mock engine (its own process, NDJSON) sends its first piece after ${firstMs} ms, then ${pieces} pieces ${pieceMs} ms apart, each stamped with the time it was written. "Added latency": arrival at the client minus that stamp, over every piece (the engine's pacing is not in it; the engine's and the client's own scheduling are). "CPU per piece": gateway CPU (all its processes, not the engine's) over pieces relayed; "per chat response": the same gateway configuration answering widget.v1 chat with the echo engine (100 connections), measured just before. Time to first chunk: from the question leaving the client, and minus the engine's own first-piece time.`,
    columns: ['mode', 'streams', 'pieces/s relayed', 'added p50 ms', 'added p99 ms', 'added max ms', 'server CPU µs/piece', 'server CPU µs/chat response', 'piece vs response', 'first chunk p50 / p99 ms', 'first chunk added p50 / p99 ms', 'errors', 'load CPU (cores)', 'server CPU (cores)'],
    rows,
    notes: [],
  };
}
