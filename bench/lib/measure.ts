/** Measurement phases shared by the scenarios. */
import { Agent } from 'undici';
import type { Fleet } from './fleet.js';
import { usage } from './procs.js';
import { percentiles } from './stats.js';
import { serviceToken, widgetPath, type Target } from './targets.js';

export interface ChatResult {
  responses: number;
  perSec: number;
  errors: number;
  p50: number;
  p99: number;
  max: number;
  loadCores: number;
  serverCores: number;
  opened: number;
  failed: number;
}

export async function measureChat(
  fleet: Fleet,
  target: Target,
  conns: number,
  opts: { durationMs: number; warmupMs?: number; thinkMs?: number; content?: string; msgpack?: boolean; protocols?: string },
): Promise<ChatResult> {
  const open = await fleet.open(target.port, widgetPath('bench'), conns, 256, opts.msgpack ? 'msgpack' : opts.protocols);
  const u0 = usage(target.proc.pid!);
  const t0 = Date.now();
  const answers = await fleet.all<{ responses: number; errors: number; ms: number; cpuMs: number; samples: number[] }>(() => ({
    op: 'chat',
    durationMs: opts.durationMs,
    warmupMs: opts.warmupMs ?? 1000,
    thinkMs: opts.thinkMs ?? 0,
    content: opts.content ?? 'hello, how are you today?',
    msgpack: opts.msgpack,
  }));
  const u1 = usage(target.proc.pid!);
  const wall = Date.now() - t0;
  await fleet.closeAll();
  const ms = Math.max(...answers.map((a) => a.ms));
  const responses = answers.reduce((a, b) => a + b.responses, 0);
  const p = percentiles(answers.flatMap((a) => a.samples));
  return {
    responses,
    perSec: (responses / ms) * 1000,
    errors: answers.reduce((a, b) => a + b.errors, 0),
    ...p,
    loadCores: answers.reduce((a, b) => a + b.cpuMs, 0) / ms,
    serverCores: (u1.cpuMs - u0.cpuMs) / wall,
    opened: open.opened,
    failed: open.failed,
  };
}

export interface FanoutResult {
  broadcasts: number;
  deliveredPerSec: number;
  expected: number;
  delivered: number;
  lost: number;
  dup: number;
  p50: number;
  p99: number;
  loadCores: number;
  serverCores: number;
  postErrors: number;
}

/**
 * Opens `subs` subscribers of one creator (split over `targets`) and POSTs
 * broadcasts for `durationMs` (alternating between the targets), each
 * carrying a sequence number and its send time. `rate` > 0: at that fixed
 * rate. `rate` = 0 (saturation): closed loop, at most `window` broadcasts
 * not yet delivered to every subscriber, so the figure is the server's
 * throughput and nothing piles up in its buffers.
 */
export async function measureFanout(
  fleet: Fleet,
  targets: Target[],
  subs: number,
  rate: number,
  durationMs: number,
  window = 4,
  o: { protocols?: string; creator?: string; alreadyOpen?: boolean; maxBroadcasts?: number } = {},
): Promise<FanoutResult> {
  const creator = o.creator ?? 'fan';
  for (const [i, t] of o.alreadyOpen ? [] : targets.entries()) {
    const share = Math.floor(subs / targets.length) + (i < subs % targets.length ? 1 : 0);
    const r = await fleet.open(t.port, widgetPath(creator), share, 256, o.protocols);
    if (r.failed) throw new Error(`${r.failed} subscribers failed to connect to ${t.name}`);
  }
  await new Promise((r) => setTimeout(r, 500)); // subscriptions settle (bus, Redis)
  const total = rate > 0 ? Math.max(1, Math.round((rate * durationMs) / 1000)) : (o.maxBroadcasts ?? 60_000);
  await fleet.all(() => ({ op: 'fanout-start', total }));
  const roots = targets.map((t) => t.proc.pid!);
  const u0 = roots.map(usage);
  const agent = new Agent({ connections: 16, pipelining: 1 });
  const auth = `Bearer ${serviceToken()}`;
  const t0 = performance.now();
  let postErrors = 0;
  const posts: Promise<void>[] = [];
  let sent = 0;
  for (let seq = 0; seq < total; seq++) {
    if (rate > 0) {
      const due = t0 + (seq * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    } else {
      if (performance.now() - t0 > durationMs) break;
      if (seq >= window && !(await fleet.delivered(seq - window, 5000))) {
        process.stderr.write(`fan-out: broadcast ${seq - window} not delivered everywhere within 5 s\n`);
      }
    }
    sent++;
    const t = targets[seq % targets.length]!;
    posts.push(
      fetch(`http://127.0.0.1:${t.port}/api/v1/creators/${creator}/broadcast`, {
        method: 'POST',
        headers: { authorization: auth, 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'bench', seq, t: performance.timeOrigin + performance.now() }),
        dispatcher: agent,
      } as RequestInit).then(
        async (r) => {
          await r.arrayBuffer();
          if (r.status !== 202) postErrors++;
        },
        () => void postErrors++,
      ),
    );
  }
  await Promise.all(posts);
  const sendMs = performance.now() - t0;
  // Closed loop: the last broadcasts may still be on their way to every subscriber (seconds, to 100,000).
  if (rate === 0) for (let seq = Math.max(0, sent - window); seq < sent; seq++) await fleet.delivered(seq, 20_000);
  await new Promise((r) => setTimeout(r, 1500)); // deliveries in flight
  const u1 = roots.map(usage);
  const wall = performance.now() - t0;
  const answers = await fleet.all<{ delivered: number; dup: number; lost: number; cpuMs: number; samples: number[] }>(() => ({
    op: 'fanout-stop',
    total: sent,
  }));
  await agent.close();
  await fleet.closeAll();
  const delivered = answers.reduce((a, b) => a + b.delivered, 0);
  const p = percentiles(answers.flatMap((a) => a.samples));
  return {
    broadcasts: sent,
    deliveredPerSec: (delivered / sendMs) * 1000,
    expected: sent * subs,
    delivered,
    lost: answers.reduce((a, b) => a + b.lost, 0),
    dup: answers.reduce((a, b) => a + b.dup, 0),
    p50: p.p50,
    p99: p.p99,
    loadCores: answers.reduce((a, b) => a + b.cpuMs, 0) / wall,
    serverCores: u1.reduce((a, u, i) => a + u.cpuMs - u0[i]!.cpuMs, 0) / wall,
    postErrors,
  };
}
