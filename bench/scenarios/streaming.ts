/**
 * Issue 12's benchmark: streamed answers. BENCH_STREAMS widget.v2 sessions
 * (default 1,000, then 250) each ask a mock engine (bench/lib/mock-engine.ts,
 * its own process) that streams BENCH_STREAM_PIECES pieces (200)
 * BENCH_PIECE_MS apart (50), so that many answers stream at once, all the
 * time, started at random moments (independent conversations). Each piece
 * carries the time the engine wrote it; the client subtracts it from when
 * the piece arrived (in a chunk): the latency added, the engine's pacing
 * excluded. The floor: bare uWS relaying the same engine to the same client
 * (bench/baselines/uws-bare.ts with AI_ENGINE_URL), at each count. Beside
 * it, the same gateway's CPU per chat response (echo engine, 100
 * connections, widget.v1), for the "CPU per relayed piece" ratio.
 */
import type { Ctx } from '../lib/context.js';
import type { Fleet } from '../lib/fleet.js';
import { measureChat } from '../lib/measure.js';
import { usage } from '../lib/procs.js';
import { fmt, percentiles, ratio } from '../lib/stats.js';
import { startMockEngine, startTarget, widgetPath, type Target } from '../lib/targets.js';
import type { Table } from '../lib/report.js';
import { startRedis } from '../lib/redis.js';

interface StreamRun {
  perSec: number;
  p: ReturnType<typeof percentiles>;
  first: ReturnType<typeof percentiles>;
  firstRaw: ReturnType<typeof percentiles>;
  pieceUs: number;
  errors: number;
  loadCores: number;
  serverCores: number;
}

/** Streams on `target` until the measured window ends: pieces relayed, added latency, CPU per piece. */
async function measureStreams(fleet: Fleet, target: Target, streams: number, answerMs: number, o: { durationMs: number; warmupMs: number }): Promise<StreamRun> {
  const opened = await fleet.open(target.port, widgetPath('stream'), streams, 256, 'widget.v2');
  if (opened.failed) throw new Error(`${opened.failed} sessions failed to connect`);
  const u0 = usage(target.proc.pid!);
  const t0 = Date.now();
  const answers = await fleet.all<{ pieces: number; answers: number; errors: number; ms: number; cpuMs: number; samples: number[]; first: number[]; firstRaw: number[] }>(() => ({
    op: 'stream',
    durationMs: o.durationMs,
    // Sessions start spread over one answer's length, and the warm-up lasts until all of them stream:
    // in the measured window the answers are at every stage, ending and starting all the time.
    spreadMs: answerMs,
    warmupMs: Math.max(o.warmupMs, answerMs),
    content: 'stream me an answer',
  }));
  const u1 = usage(target.proc.pid!);
  const wall = Date.now() - t0;
  await fleet.closeAll();
  const ms = Math.max(...answers.map((a) => a.ms));
  const perSec = (answers.reduce((a, b) => a + b.pieces, 0) / ms) * 1000;
  if (!(perSec > 0)) throw new Error(`${target.name}: no piece relayed`);
  const serverCores = (u1.cpuMs - u0.cpuMs) / wall;
  return {
    perSec,
    p: percentiles(answers.flatMap((a) => a.samples)),
    first: percentiles(answers.flatMap((a) => a.first)),
    firstRaw: percentiles(answers.flatMap((a) => a.firstRaw)),
    pieceUs: (serverCores / perSec) * 1e6,
    errors: answers.reduce((a, b) => a + b.errors, 0),
    loadCores: answers.reduce((a, b) => a + b.cpuMs, 0) / ms,
    serverCores,
  };
}

export async function run(ctx: Ctx, fleet: Fleet): Promise<Table> {
  // The target's 1,000 streams, and a quarter of them: the latency with this machine's cores not saturated.
  const counts = (process.env.BENCH_STREAMS ?? (ctx.smoke ? '20' : '1000,250')).split(',').map(Number);
  const most = Math.max(...counts);
  const pieces = Number(process.env.BENCH_STREAM_PIECES ?? (ctx.smoke ? 20 : 200));
  const pieceMs = Number(process.env.BENCH_PIECE_MS ?? (ctx.smoke ? 10 : 50));
  const firstMs = 20;
  const answerMs = firstMs + pieces * pieceMs;
  const engine = await startMockEngine({ DELAY_MS: String(firstMs), PIECES: String(pieces), PIECE_MS: String(pieceMs) });
  const redis = await startRedis();
  const engineEnv = {
    AI_ENGINE_URL: engine.url,
    AI_ENGINE_MAX_INFLIGHT: String(most * 2),
    AI_ENGINE_MAX_INFLIGHT_PER_CREATOR: String(most * 2),
    AI_ENGINE_CONNECTIONS: String(Math.max(64, most)),
  };
  const window = { durationMs: ctx.durationMs, warmupMs: ctx.warmupMs };
  const rows: string[][] = [];
  const row = (label: string, streams: number, r: StreamRun, floor: StreamRun | undefined, chatUs: number | undefined): string[] => [
    label,
    fmt(streams),
    fmt(r.perSec),
    fmt(r.p.p50, 2),
    fmt(r.p.p99, 2),
    floor ? ratio(r.p.p99, floor.p.p99) : '-',
    fmt(r.p.max, 1),
    fmt(r.pieceUs, 1),
    floor ? ratio(r.pieceUs, floor.pieceUs) : '-',
    chatUs === undefined ? '-' : fmt(chatUs, 1),
    chatUs === undefined ? '-' : ratio(r.pieceUs, chatUs),
    `${fmt(r.firstRaw.p50, 1)} / ${fmt(r.firstRaw.p99, 1)}`,
    `${fmt(r.first.p50, 2)} / ${fmt(r.first.p99, 2)}`,
    fmt(r.errors),
    r.loadCores.toFixed(2),
    r.serverCores.toFixed(2),
  ];
  try {
    // The floor: bare uWS relaying the same engine's pieces, a chunk per piece, nothing else.
    const floors = new Map<number, StreamRun>();
    if (ctx.targets.includes('uws')) {
      for (const streams of counts) {
        const bare = await startTarget('uws', ctx.workers, engineEnv, 'uws relay');
        try {
          const floor = await measureStreams(fleet, bare, streams, answerMs, window);
          floors.set(streams, floor);
          process.stderr.write(`streaming uws relay, ${streams} streams: ${fmt(floor.perSec)} pieces/s, added p50 ${fmt(floor.p.p50, 2)} p99 ${fmt(floor.p.p99, 2)} ms, ${fmt(floor.pieceUs, 1)} us/piece\n`);
          rows.push(row('bare uWS relay', streams, floor, floor, undefined));
        } finally {
          await bare.stop();
        }
      }
    }
    const modes: Array<[string, Record<string, string>]> = [
      ['embedded', {}],
      ['Redis', { REDIS_URL: redis.url, REDIS_PREFIX: 'benchstream:' }],
    ];
    for (const [label, env] of ctx.smoke ? modes.slice(0, 1) : modes) {
      // The same gateway's CPU per chat response (echo engine: no AI_ENGINE_URL).
      const plain = await startTarget('gateway', ctx.workers, { ...env }, `${label} chat`);
      let chatUs: number;
      try {
        const chat = await measureChat(fleet, plain, 100, window);
        chatUs = (chat.serverCores / chat.perSec) * 1e6;
      } finally {
        await plain.stop();
      }
      for (const streams of counts) {
        const target = await startTarget('gateway', ctx.workers, { ...env, ...engineEnv }, `${label} streaming`);
        try {
          const r = await measureStreams(fleet, target, streams, answerMs, window);
          process.stderr.write(`streaming ${label}, ${streams} streams: ${fmt(r.perSec)} pieces/s, added p50 ${fmt(r.p.p50, 2)} p99 ${fmt(r.p.p99, 2)} ms, ${fmt(r.pieceUs, 1)} us/piece vs ${fmt(chatUs, 1)} us/response\n`);
          rows.push(row(label, streams, r, floors.get(streams), chatUs));
        } finally {
          await target.stop();
        }
      }
    }
  } finally {
    engine.proc.kill();
    redis.stop();
  }
  return {
    title: 'Streamed answers',
    method: `${counts.map((n) => fmt(n)).join(' and ')} widget.v2 sessions, each asking again as soon as its answer is complete, so that many answers stream at once; the sessions start spread over one answer's length (${fmt(answerMs)} ms) and the warm-up lasts as long, so the measured answers are at every stage (independent conversations, not all pieces in the same instant). The mock engine (its own process, NDJSON) sends its first piece after ${firstMs} ms, then ${pieces} pieces ${pieceMs} ms apart, each stamped with the time it was written. "Added latency": arrival at the client minus that stamp, over every piece (the engine's pacing is not in it; the engine's and the client's own scheduling are). "bare uWS relay": bench/baselines/uws-bare.ts relaying the same engine (undici dispatch, a chunk frame per piece, no typing, history or merging), the floor this machine sets with the same engine and load client. "CPU per piece": server CPU (all its processes, not the engine's) over pieces relayed; "per chat response": the same gateway configuration answering widget.v1 chat with the echo engine (100 connections), measured just before. Time to first chunk: from the question leaving the client, and minus the engine's own first-piece time.`,
    columns: ['mode', 'streams', 'pieces/s relayed', 'added p50 ms', 'added p99 ms', 'p99 vs bare', 'added max ms', 'server CPU µs/piece', 'µs/piece vs bare', 'server CPU µs/chat response', 'piece vs response', 'first chunk p50 / p99 ms', 'first chunk added p50 / p99 ms', 'errors', 'load CPU (cores)', 'server CPU (cores)'],
    rows,
    notes: [],
  };
}
