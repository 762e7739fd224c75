/**
 * Issue 11's benchmark: what "nothing lost" costs, and how fast a resume is.
 *  1. Chat and fan-out with widget.v2 and history on (HISTORY_SIZE default)
 *     against widget.v1 with history off (HISTORY_SIZE=0), embedded and
 *     Redis mode, same load, same run: throughput ratios and server CPU per
 *     response / delivery. And the floors of the chat ratio: bare uWS
 *     against bare uWS sending every answer to the primary to be kept
 *     (HISTORY_HOP, embedded mode's) and appending it to Redis before it
 *     leaves (HISTORY_REDIS, Redis mode's; bench/baselines/uws-bare.ts), in
 *     the same rounds.
 *  2. Resume: 1,000 broadcasts published while nobody listened, then 100
 *     clients connect at once with resume_broadcast=EPOCH:0; per client, the
 *     time from starting the TCP connect to the 1,000th replayed frame.
 *  3. Memory: per stream of history at the default size (broadcast streams
 *     filled to HISTORY_SIZE frames), and per session (one question and its
 *     answer), as the primary's RSS (embedded) or Redis's used_memory.
 */
import { performance } from 'node:perf_hooks';
import { Agent } from 'undici';
import { Redis } from 'ioredis';
import type { Ctx } from '../lib/context.js';
import type { Fleet } from '../lib/fleet.js';
import { measureChat, measureFanout, type ChatResult, type FanoutResult } from '../lib/measure.js';
import { fmt, inRounds, mean, percentiles, ratio, ratios } from '../lib/stats.js';
import { serviceToken, startTarget, widgetPath, type Target } from '../lib/targets.js';
import type { Table } from '../lib/report.js';
import { startRedis } from '../lib/redis.js';
import { rssKiB } from '../lib/procs.js';
import { WireConn, encodeFrame } from '../lib/wire.js';

const V2 = 'widget.v2';
const DEFAULT_HISTORY = 100;

type Mode = { label: string; env: Record<string, string>; redis?: { url: string; stop(): void } };

async function modes(smoke: boolean): Promise<Mode[]> {
  if (smoke) return [{ label: 'embedded', env: {} }];
  const redis = await startRedis();
  return [
    { label: 'embedded', env: {} },
    { label: 'Redis', env: { REDIS_URL: redis.url, REDIS_PREFIX: 'benchhist:' }, redis },
  ];
}

/** POSTs `n` broadcasts to each creator, `parallel` at a time; throws on any non-202. */
export async function publish(port: number, creators: string[], n: number, body: (i: number) => object, parallel = 32): Promise<void> {
  const agent = new Agent({ connections: parallel, pipelining: 1 });
  const auth = `Bearer ${serviceToken()}`;
  const jobs: Array<[string, number]> = [];
  for (let i = 0; i < n; i++) for (const c of creators) jobs.push([c, i]);
  let next = 0;
  let failed = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const [creator, i] = jobs[next++]!;
      const r = await fetch(`http://127.0.0.1:${port}/api/v1/creators/${creator}/broadcast`, {
        method: 'POST',
        headers: { authorization: auth, 'content-type': 'application/json' },
        body: JSON.stringify(body(i)),
        dispatcher: agent,
      } as RequestInit);
      await r.arrayBuffer();
      if (r.status !== 202) failed++;
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  await agent.close();
  if (failed) throw new Error(`${failed} broadcasts refused`);
}

/** Opens one widget.v2 socket; resolves with its connection_status details and the socket. */
export function openV2(port: number, path: string, onFrame: (p: Buffer) => void = () => {}): Promise<{ conn: WireConn; details: { streams: Record<'session' | 'broadcast', { epoch: string; offset: number }> } }> {
  return new Promise((resolve, reject) => {
    let first = true;
    new WireConn({
      host: '127.0.0.1',
      port,
      path,
      protocols: V2,
      onMessage: (c, p) => {
        if (first) {
          first = false;
          const m = JSON.parse(p.toString()) as { type: string; details: never };
          if (m.type !== 'connection_status') reject(new Error(`first frame ${m.type}`));
          else resolve({ conn: c, details: m.details });
        } else onFrame(p);
      },
      onClose: (_c, code) => first && reject(new Error(`closed ${code}`)),
      onError: (_c, err) => first && reject(err),
    });
  });
}

const OFFSET_KEY = Buffer.from('"offset":');
const BROADCAST = Buffer.from('{"type":"broadcast",');
const REPLAY = Buffer.from('{"type":"replay","stream":"broadcast",');

/** A broadcast frame's offset, without JSON.parse; 0 for other frames. */
function broadcastOffset(p: Buffer): number {
  if (p.compare(BROADCAST, 0, BROADCAST.length, 0, BROADCAST.length) !== 0) return 0;
  return digitsAt(p, p.indexOf(OFFSET_KEY, BROADCAST.length) + OFFSET_KEY.length);
}

/** The number written at `i`. */
function digitsAt(p: Buffer, i: number): number {
  let n = 0;
  for (let ch = p[i]!; ch >= 48 && ch <= 57; ch = p[++i]!) n = n * 10 + (ch - 48);
  return n;
}

/**
 * `clients` widget.v2 sockets resume the broadcast stream from 0 at once;
 * each records the time from its connect to the frame at offset `frames`.
 */
export async function resumeAll(port: number, creator: string, epoch: string, frames: number, clients: number, batch = false): Promise<{ ms: number[]; complete: number; lost: number; cpuMs: number }> {
  const path = `${widgetPath(creator)}&resume_broadcast=${encodeURIComponent(`${epoch}:0`)}${batch ? '&replay=batch' : ''}`;
  const ms: number[] = [];
  let lost = 0;
  const cpu0 = process.cpuUsage();
  await Promise.all(
    Array.from(
      { length: clients },
      () =>
        new Promise<void>((done) => {
          const t0 = performance.now();
          let expect = 1;
          let settled = false;
          const end = (c: WireConn) => {
            if (settled) return;
            settled = true;
            c.close();
            done();
          };
          const c = new WireConn({
            host: '127.0.0.1',
            port,
            path,
            protocols: V2,
            onMessage: (conn, p) => {
              if (p.includes('"type":"continuity_lost"')) {
                lost++;
                return end(conn);
              }
              // A replay frame of the broadcast stream: the offset of every frame inside, in order (no parse, as for a lone frame).
              const batch = p.compare(REPLAY, 0, REPLAY.length, 0, REPLAY.length) === 0;
              for (let at = batch ? p.indexOf(OFFSET_KEY) : 0; at >= 0; at = batch ? p.indexOf(OFFSET_KEY, at + OFFSET_KEY.length) : -1) {
                const off = batch ? digitsAt(p, at + OFFSET_KEY.length) : broadcastOffset(p);
                if (off === 0) return;
                if (off !== expect) {
                  lost++; // a gap or a duplicate: the benchmark counts it as a failure
                  return end(conn);
                }
                if (++expect > frames) {
                  ms.push(performance.now() - t0);
                  return end(conn);
                }
              }
            },
            onClose: (conn) => end(conn),
            onError: (conn) => end(conn),
          });
          setTimeout(() => end(c), 30_000);
        }),
    ),
  );
  const cpu = process.cpuUsage(cpu0);
  return { ms, complete: ms.length, lost, cpuMs: (cpu.user + cpu.system) / 1000 };
}

/** The store's memory: the primary's own RSS (embedded), or Redis's used_memory. */
async function storeKiB(target: Target, redis: Redis | undefined): Promise<number> {
  await new Promise((r) => setTimeout(r, 1500)); // let the primary's allocator and GC settle
  if (!redis) return rssKiB(target.proc.pid!);
  const info = await redis.info('memory');
  return Number(/used_memory:(\d+)/.exec(info)![1]) / 1024;
}

/** Sessions that each asked one question and got its answer (widget.v2: the answer is in the session's stream). */
async function askOnce(port: number, sessions: number, parallel = 50): Promise<void> {
  const ask = encodeFrame(JSON.stringify({ type: 'user_message', content: 'what does the history of one session cost?' }));
  let next = 0;
  const worker = async () => {
    while (next++ < sessions) {
      await new Promise<void>((done, fail) => {
        openV2(port, widgetPath('mem'), (p) => {
          if (p.includes('"type":"ai_response",')) {
            conn.close();
            done();
          }
        }).then(({ conn: c }) => {
          conn = c;
          c.send(ask);
        }, fail);
        let conn: WireConn;
      });
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
}

/**
 * The table's rows for chat setups measured in rounds (`chats[i]`: setup i's
 * rounds), against the first; fan-out figures where measured.
 */
function chatRows(rows: string[][], mode: string, labels: readonly string[], chats: ChatResult[][], fans?: FanoutResult[]): void {
  const us = (c: ChatResult) => (c.serverCores / c.perSec) * 1e6;
  labels.forEach((label, i) => {
    const cs = chats[i]!;
    const fan = fans?.[i];
    rows.push([
      mode,
      label,
      fmt(mean(cs.map((c) => c.perSec))),
      ratio(mean(cs.map((c) => c.perSec)), mean(chats[0]!.map((c) => c.perSec))),
      ratios(cs.map((c) => c.perSec), chats[0]!.map((c) => c.perSec)),
      fmt(mean(cs.map(us)), 1),
      fmt(mean(cs.map((c) => c.p99)), 2),
      fan ? fmt(fan.deliveredPerSec) : '-',
      fan ? ratio(fan.deliveredPerSec, fans![0]!.deliveredPerSec) : '-',
      fan ? fmt((fan.serverCores / fan.deliveredPerSec) * 1e6, 2) : '-',
      `${mean(cs.map((c) => c.loadCores)).toFixed(2)} / ${fan ? fan.loadCores.toFixed(2) : '-'}`,
    ]);
  });
}

export async function run(ctx: Ctx, fleet: Fleet): Promise<Table> {
  const all = await modes(ctx.smoke);
  const conns = ctx.chatConns[0] ?? 100;
  const subs = ctx.fanoutSubs[0] ?? 1000;
  const rows: string[][] = [];
  const resumeRows: string[] = [];
  const memRows: string[] = [];
  const resumeFrames = ctx.smoke ? 50 : 1000;
  const resumeClients = ctx.smoke ? 10 : 100;
  const memStreams = ctx.smoke ? 20 : 1000;
  const memSessions = ctx.smoke ? 20 : 1000;
  /** The floor's p99 per replay mode (bare uWS). */
  const floorP99: { frames?: number; batch?: number } = {};
  const replayModes = ['frames', 'batch'] as const;
  const resumeRow = (label: string, replay: (typeof replayModes)[number], r: Awaited<ReturnType<typeof resumeAll>>) => {
    const p = percentiles(r.ms);
    const floor = floorP99[replay];
    resumeRows.push(`| ${label} | ${replay === 'batch' ? 'replay=batch' : 'a frame at a time'} | ${fmt(resumeFrames)} | ${resumeClients} | ${r.complete} | ${r.lost} | ${fmt(p.p50, 1)} | ${fmt(p.p99, 1)} | ${floor === undefined ? '-' : ratio(p.p99, floor)} | ${fmt(p.max, 1)} | ${(r.cpuMs / Math.max(1, p.max)).toFixed(2)} |`);
    return p;
  };
  try {
    // The resume's floor: bare uWS sending the same frames, built in advance, at connect (no store, no pacing).
    if (ctx.targets.includes('uws')) {
      const bare = await startTarget('uws', ctx.workers, { REPLAY_FRAMES: String(resumeFrames) }, 'uws replay');
      try {
        for (const replay of replayModes) {
          const r = await resumeAll(bare.port, 'resume', 'bare', resumeFrames, resumeClients, replay === 'batch');
          if (r.complete !== resumeClients) throw new Error(`bare resume: ${resumeClients - r.complete} clients incomplete`);
          floorP99[replay] = percentiles(r.ms).p99;
          resumeRow('bare uWS (frames built in advance, sent at connect)', replay, r);
          process.stderr.write(`history bare uWS resume (${replay}): p99 ${fmt(floorP99[replay]!, 1)} ms\n`);
        }
      } finally {
        await bare.stop();
      }
    }
    // The floors of v2 against v1: the least a history kept by the primary, or in Redis, costs a chat answer.
    if (ctx.targets.includes('uws')) {
      const redis = all.find((m) => m.redis)?.redis;
      const bare: ReadonlyArray<readonly [string, Record<string, string>]> = [
        ['bare uWS', {}],
        ['bare uWS, every answer kept by the primary (embedded floor)', { HISTORY_HOP: '1' }],
        ...(redis ? [['bare uWS, every answer appended in Redis first (Redis floor)', { HISTORY_REDIS: redis.url }] as const] : []),
      ];
      const chats = await inRounds(ctx.rounds, bare, async ([label, env], round) => {
        const target = await startTarget('uws', ctx.workers, env, label);
        try {
          const chat = await measureChat(fleet, target, conns, { durationMs: ctx.durationMs, warmupMs: ctx.warmupMs });
          if (chat.errors) throw new Error(`${label}: ${chat.errors} chat errors`);
          process.stderr.write(`history ${label} round ${round + 1}: chat ${fmt(chat.perSec)}/s\n`);
          return chat;
        } finally {
          await target.stop();
        }
      });
      chatRows(rows, 'floor', bare.map(([label]) => label), chats);
    }
    for (const mode of all) {
      // 1. Throughput: widget.v1 without history against widget.v2 with it;
      // chat in ctx.rounds rounds (alternating which goes first), fan-out once.
      const setups = [
        ['widget.v1, history off', { HISTORY_SIZE: '0' }, undefined],
        ['widget.v2, history on', {}, V2],
      ] as const;
      const fans: FanoutResult[] = [];
      const chats = await inRounds(ctx.rounds, [...setups.keys()], async (i, round) => {
        const [label, env, protocols] = setups[i]!;
        const target = await startTarget('gateway', ctx.workers, { ...mode.env, ...env }, `${mode.label} ${label}`);
        try {
          const chat = await measureChat(fleet, target, conns, { durationMs: ctx.durationMs, warmupMs: ctx.warmupMs, protocols });
          if (chat.errors) throw new Error(`${label}: ${chat.errors} chat errors`);
          if (round === 0) {
            const fan = await measureFanout(fleet, [target], subs, 0, ctx.durationMs, 4, { protocols });
            if (fan.lost || fan.dup) throw new Error(`${label}: ${fan.lost} deliveries lost, ${fan.dup} duplicated`);
            fans[i] = fan;
          }
          process.stderr.write(`history ${mode.label} ${label} round ${round + 1}: chat ${fmt(chat.perSec)}/s\n`);
          return chat;
        } finally {
          await target.stop();
        }
      });
      chatRows(rows, mode.label, setups.map(([label]) => label), chats, fans);

      // 2. Resume, and 3. memory, on a server keeping the frames to resume.
      const target = await startTarget('gateway', ctx.workers, { ...mode.env, HISTORY_SIZE: String(Math.max(DEFAULT_HISTORY, resumeFrames)) }, `${mode.label} resume`);
      const redis = mode.redis ? new Redis(mode.redis.url, { lazyConnect: false, maxRetriesPerRequest: 1 }) : undefined;
      try {
        const { conn, details } = await openV2(target.port, widgetPath('resume'));
        conn.close();
        const body = 'x'.repeat(100);
        await publish(target.port, ['resume'], resumeFrames, (i) => ({ type: 'bench', seq: i, body }));
        for (const replay of replayModes) {
          const r = await resumeAll(target.port, 'resume', details.streams.broadcast.epoch, resumeFrames, resumeClients, replay === 'batch');
          const p = resumeRow(mode.label, replay, r);
          process.stderr.write(`history ${mode.label} resume (${replay}): ${r.complete}/${resumeClients} complete, p99 ${fmt(p.p99, 1)} ms\n`);
          if (r.complete !== resumeClients) throw new Error(`resume: ${resumeClients - r.complete} clients did not get all ${resumeFrames} frames (${r.lost} gaps or continuity_lost)`);
        }

        // Memory per broadcast stream holding HISTORY_SIZE (here the default) frames of ~150 bytes.
        const before = await storeKiB(target, redis);
        const creators = Array.from({ length: memStreams }, (_, i) => `mem${i}`);
        await publish(target.port, creators, DEFAULT_HISTORY, (i) => ({ type: 'bench', seq: i, body }));
        const afterStreams = await storeKiB(target, redis);
        await askOnce(target.port, memSessions);
        const afterSessions = await storeKiB(target, redis);
        const perStream = ((afterStreams - before) * 1024) / memStreams;
        const perSession = ((afterSessions - afterStreams) * 1024) / memSessions;
        memRows.push(`| ${mode.label} | ${redis ? 'Redis used_memory' : 'primary RSS'} | ${fmt(memStreams)} x ${DEFAULT_HISTORY} frames | ${fmt(perStream)} | ${fmt(perStream / DEFAULT_HISTORY)} | ${fmt(memSessions)} | ${fmt(perSession)} |`);
      } finally {
        redis?.disconnect();
        await target.stop();
      }
    }
  } finally {
    for (const m of all) m.redis?.stop();
  }
  return {
    title: 'Nothing lost: the cost of widget.v2 and history, and resume',
    method: `Chat: ${conns} connections, echo engine, ${ctx.rounds} round(s) alternating which setup goes first (means, and each round's ratio). Fan-out: ${fmt(subs)} subscribers of one creator, broadcasts in a closed loop (at most 4 not yet delivered everywhere). Each setup is a fresh ${ctx.workers}-worker gateway; "embedded" keeps history in the primary, "Redis" in a redis-server started by the benchmark. Ratios are against widget.v1 with HISTORY_SIZE=0 in the same mode and run. "floor": bare uWS, and bare uWS sending every answer (with its offset) to the primary, which keeps each session's last 100 (the frames of a turn in one IPC message, each the string sent to the socket: bench/baselines/uws-bare.ts, HISTORY_HOP=1), in the same rounds; its ratio is the least embedded mode's v2 chat can cost against v1, as the primary holds the history. "Redis floor": bare uWS appending every answer to its session's list in the benchmark's redis-server before sending it with its offset (a turn's answers in one script run: HINCRBY, RPUSH, LTRIM, PEXPIRE each; HISTORY_REDIS=<url>), the least Redis mode's v2 chat can cost.`,
    columns: ['mode', 'protocol', 'chat responses/s', 'vs v1 (floor: vs bare)', 'each round vs v1', 'chat server CPU µs/response', 'chat p99 ms', 'fan-out deliveries/s', 'vs v1', 'fan-out server CPU µs/delivery', 'load CPU chat / fan-out (cores)'],
    rows,
    notes: [
      `Resume: ${fmt(resumeFrames)} broadcasts (~150 bytes each) published while nobody listened, then ${resumeClients} widget.v2 clients connect at once with \`resume_broadcast=EPOCH:0\`; time from starting the TCP connect to the frame at offset ${fmt(resumeFrames)}, every frame checked in order (a gap, a duplicate or continuity_lost fails the run); then the same with \`replay=batch\` (the frames in \`replay\` frames of at most 64 KiB, each frame inside found and checked as a lone one is). The clients run in the benchmark's own process. "bare uWS": the floor, bench/baselines/uws-bare.ts with REPLAY_FRAMES sending the same frames (or batches), built in advance, at connect, to the same clients.\n`,
      '| mode | replay | frames | clients | complete | gaps or lost | p50 ms | p99 ms | p99 vs bare | max ms | client CPU (cores) |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
      ...resumeRows,
      '',
      `Memory: broadcast streams filled to the default HISTORY_SIZE (${DEFAULT_HISTORY}) with ~150-byte frames; sessions that asked one question and got the answer (the answer's frame, the claim of its message, the stream's keys). Measured as the growth of the store's memory (the primary's RSS, so allocator and GC noise is in it; or Redis's used_memory) divided by the count.\n`,
      '| mode | measured | streams | bytes per stream | bytes per frame | sessions | bytes per session |',
      '|---|---|---|---|---|---|---|',
      ...memRows,
    ],
  };
}
