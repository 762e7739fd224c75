/**
 * A load-generator process, forked by the bench runner (several of them: the
 * file-descriptor limit is 20000 per process, and one Node process saturates
 * one core). It opens raw WebSocket connections from its own source address
 * (127.0.0.x) and runs one phase at a time on the runner's command,
 * reporting counts, latency samples and its own CPU time.
 */
import { performance } from 'node:perf_hooks';
import { pack } from 'msgpackr';
import { WireConn, encodeFrame } from './wire.js';

type Cmd =
  | { op: 'open'; id: number; host: string; port: number; path: string; n: number; localAddresses: string[]; concurrency: number; protocols?: string }
  | { op: 'chat'; id: number; durationMs: number; warmupMs: number; content: string; thinkMs: number; msgpack?: boolean }
  | { op: 'fanout-start'; id: number; total: number }
  | { op: 'fanout-stop'; id: number; total: number }
  | { op: 'stream'; id: number; durationMs: number; warmupMs: number; content: string; spreadMs: number }
  | { op: 'close'; id: number }
  | { op: 'exit'; id: number };

const MAX_SAMPLES = 100_000;
const conns: WireConn[] = [];
let phase: 'idle' | 'chat' | 'fanout' | 'stream' = 'idle';
let closedDuring = 0;

/** Reservoir of latency samples (ms), bounded. */
class Samples {
  readonly values = new Float64Array(MAX_SAMPLES);
  count = 0;
  seen = 0;
  add(v: number): void {
    this.seen++;
    if (this.count < MAX_SAMPLES) this.values[this.count++] = v;
    else {
      const j = Math.floor(Math.random() * this.seen);
      if (j < MAX_SAMPLES) this.values[j] = v;
    }
  }
  take(): number[] {
    return Array.from(this.values.subarray(0, this.count));
  }
}

// chat state
let chatFrame: Buffer = Buffer.alloc(0);
let responses = 0;
let errors = 0;
let measuring = false;
let chatSamples = new Samples();
let thinkMs = 0;

function sendChat(c: WireConn): void {
  c.state = performance.now();
  c.send(chatFrame);
}

// fan-out state
let fanDelivered = 0;
let fanDup = 0;
let fanSamples = new Samples();

// What a frame starts with after its opening ('{', or a MessagePack map header).
// (The comma: "ai_response_chunk", a widget.v2 piece, is not an answer.)
const AI_JSON = Buffer.from('"type":"ai_response",');
const ERR_JSON = Buffer.from('"type":"error"');
const AI_MSGPACK = Buffer.concat([pack('type'), pack('ai_response')]);
const ERR_MSGPACK = Buffer.concat([pack('type'), pack('error')]);
let AI = AI_JSON;
let ERR = ERR_JSON;
let msgpackFrames = false;

const OFFSET = Buffer.from('"offset":');

/**
 * Where a frame's first key starts: after '{' (JSON) or the map header
 * (MessagePack); after a leading `"offset":N,` (a widget.v2 session frame).
 */
function bodyAt(p: Buffer): number {
  if (!msgpackFrames) {
    if (p.compare(OFFSET, 0, OFFSET.length, 1, 1 + OFFSET.length) !== 0) return 1;
    let i = 1 + OFFSET.length;
    while (p[i]! >= 48 && p[i]! <= 57) i++;
    return i + 1;
  }
  const h = p[0]!;
  return h === 0xde ? 3 : h === 0xdf ? 5 : 1;
}

/** Whether `p` starts with `prefix` after its opening. */
function startsWith(p: Buffer, prefix: Buffer): boolean {
  const at = bodyAt(p);
  return p.length >= at + prefix.length && p.compare(prefix, 0, prefix.length, at, at + prefix.length) === 0;
}

const BENCH = Buffer.from('{"type":"bench","seq":');
/** A widget.v2 broadcast: {"type":"broadcast","offset":N,"data":{...as POSTed...}}. */
const V2_BROADCAST = Buffer.from('{"type":"broadcast","offset":');
const DATA = Buffer.from('"data":');

// stream state: pieces carry the time the engine wrote them, "[T] " (bench/lib/mock-engine.ts).
const CHUNK = Buffer.from('{"type":"ai_response_chunk",');
let streamPieces = 0;
let streamAnswers = 0;
let streamErrors = 0;
let streamSamples = new Samples();
let firstSamples = new Samples();
let firstRaw = new Samples();

/** Per connection: when its question left, and whether its first chunk came. */
interface StreamState {
  sentAt: number;
  first: boolean;
}

function onStreamFrame(c: WireConn, p: Buffer): void {
  const now = performance.timeOrigin + performance.now();
  const st = c.state as StreamState;
  if (p.compare(CHUNK, 0, CHUNK.length, 0, CHUNK.length) === 0) {
    // Every "[T]" in the delta: one engine piece (the gateway may have merged several into one chunk).
    let i = p.indexOf(91, CHUNK.length); // '['
    while (i >= 0) {
      const end = p.indexOf(93, i); // ']'
      if (end < 0) break;
      const t = Number(p.toString('latin1', i + 1, end));
      if (measuring && Number.isFinite(t)) {
        streamPieces++;
        streamSamples.add(now - t);
        if (!st.first) {
          firstSamples.add(now - t);
          firstRaw.add(now - st.sentAt);
        }
      }
      st.first = true;
      i = p.indexOf(91, end);
    }
    return;
  }
  const at = bodyAt(p);
  if (p.compare(AI_JSON, 0, AI_JSON.length, at, at + AI_JSON.length) === 0) {
    if (measuring) streamAnswers++;
    st.first = false;
    st.sentAt = now;
    c.send(chatFrame);
  } else if (p.compare(ERR_JSON, 0, ERR_JSON.length, at, at + ERR_JSON.length) === 0) {
    streamErrors++;
  }
}

function onMessage(c: WireConn, p: Buffer): void {
  if (phase === 'stream') return onStreamFrame(c, p);
  if (phase === 'chat') {
    if (startsWith(p, AI)) {
      const now = performance.now();
      if (measuring) {
        responses++;
        chatSamples.add(now - (c.state as number));
      }
      if (thinkMs > 0) setTimeout(sendChat, thinkMs, c);
      else {
        c.state = now;
        c.send(chatFrame);
      }
    } else if (startsWith(p, ERR)) {
      errors++;
    }
  } else if (phase === 'fanout') {
    // Broadcast frames are {"type":"bench","seq":N,"t":T} (key order is kept
    // by every server); read the two numbers without JSON.parse, which would
    // make the load side the bottleneck.
    let at = 0;
    if (p.compare(V2_BROADCAST, 0, V2_BROADCAST.length, 0, V2_BROADCAST.length) === 0) at = p.indexOf(DATA, V2_BROADCAST.length) + DATA.length;
    if (p.length < at + BENCH.length || p.compare(BENCH, 0, BENCH.length, at, at + BENCH.length) !== 0) return;
    let i = at + BENCH.length;
    let seqN = 0;
    for (let ch = p[i]!; ch >= 48 && ch <= 57; ch = p[++i]!) seqN = seqN * 10 + (ch - 48);
    if (p[i] !== 44) return; // ','
    const t = Number(p.toString('latin1', i + 5, p.indexOf(125, i))); // skip ,"t": up to '}'
    const m = { seq: seqN, t };
    if (m.seq < 0 || m.seq >= fanTotal) return;
    const seen = (c.state as Uint8Array | undefined) ?? (c.state = new Uint8Array((fanTotal >> 3) + 1));
    const bit = 1 << (m.seq & 7);
    if (seen[m.seq >> 3]! & bit) fanDup++;
    else {
      seen[m.seq >> 3]! |= bit;
      // Tell the runner when every connection here has this broadcast (closed-loop mode).
      if (++fanCount[m.seq]! === conns.length) process.send!({ t: 'seq', seq: m.seq });
      fanDelivered++;
      fanSamples.add(performance.timeOrigin + performance.now() - m.t!);
    }
  }
}

function reply(m: object): void {
  process.send!(m);
}

async function open(cmd: Extract<Cmd, { op: 'open' }>): Promise<void> {
  const started = performance.now();
  let opened = 0;
  let failed = 0;
  let inflight = 0;
  let next = 0;
  const codes: Record<number, number> = {};
  await new Promise<void>((done) => {
    const launch = () => {
      while (inflight < cmd.concurrency && next < cmd.n) {
        next++;
        inflight++;
        let settled = false;
        const settle = (ok: boolean) => {
          if (settled) return;
          settled = true;
          inflight--;
          if (ok) opened++;
          else failed++;
          if (opened + failed === cmd.n) done();
          else launch();
        };
        const c = new WireConn({
          host: cmd.host,
          port: cmd.port,
          path: cmd.path,
          // Round-robin over source addresses: each has ~28k ephemeral ports,
          // and closed connections hold theirs in TIME_WAIT for a minute.
          localAddress: cmd.localAddresses[next % cmd.localAddresses.length],
          protocols: cmd.protocols,
          onMessage: (conn, p) => {
            if (!settled) {
              settle(true); // the first frame (connection_status) means the socket is up
              conns.push(conn);
              return;
            }
            onMessage(conn, p);
          },
          onClose: (_conn, code) => {
            if (!settled) {
              codes[code] = (codes[code] ?? 0) + 1;
              settle(false);
            } else closedDuring++;
          },
          onError: () => {},
        });
        void c;
      }
    };
    launch();
  });
  reply({ id: cmd.id, opened, failed, ms: performance.now() - started, codes });
}

async function chat(cmd: Extract<Cmd, { op: 'chat' }>): Promise<void> {
  const msg = { type: 'user_message', content: cmd.content };
  chatFrame = cmd.msgpack ? encodeFrame(pack(msg), 0x2) : encodeFrame(JSON.stringify(msg));
  AI = cmd.msgpack ? AI_MSGPACK : AI_JSON;
  ERR = cmd.msgpack ? ERR_MSGPACK : ERR_JSON;
  msgpackFrames = cmd.msgpack === true;
  responses = 0;
  errors = 0;
  thinkMs = cmd.thinkMs;
  chatSamples = new Samples();
  phase = 'chat';
  measuring = false;
  // Spread the first sends over the think time, so sessions do not move in lock-step.
  for (const c of conns) {
    if (thinkMs > 0) setTimeout(sendChat, Math.random() * thinkMs, c);
    else sendChat(c);
  }
  const { ms, cpuMs } = await measureWindow(cmd.warmupMs, cmd.durationMs);
  phase = 'idle';
  // Let answers in flight drain before the next phase.
  await new Promise((r) => setTimeout(r, 300 + thinkMs));
  reply({ id: cmd.id, responses, errors, ms, cpuMs, samples: chatSamples.take(), closed: closedDuring });
}

/** Warm-up, then the measured window (`measuring` on): its length and this process's CPU in it. */
async function measureWindow(warmupMs: number, durationMs: number): Promise<{ ms: number; cpuMs: number }> {
  await new Promise((r) => setTimeout(r, warmupMs));
  measuring = true;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, durationMs));
  measuring = false;
  const cpu = process.cpuUsage(cpu0);
  return { ms: performance.now() - t0, cpuMs: (cpu.user + cpu.system) / 1000 };
}

async function streamPhase(cmd: Extract<Cmd, { op: 'stream' }>): Promise<void> {
  chatFrame = encodeFrame(JSON.stringify({ type: 'user_message', content: cmd.content }));
  msgpackFrames = false;
  streamPieces = 0;
  streamAnswers = 0;
  streamErrors = 0;
  streamSamples = new Samples();
  firstSamples = new Samples();
  firstRaw = new Samples();
  phase = 'stream';
  measuring = false;
  // Each session asks at its own moment within spreadMs: independent
  // conversations, not one whose engine pieces all fall in the same
  // instant (that would measure a burst every piece interval).
  for (const c of conns) {
    setTimeout(() => {
      c.state = { sentAt: performance.timeOrigin + performance.now(), first: false } satisfies StreamState;
      c.send(chatFrame);
    }, Math.random() * cmd.spreadMs);
  }
  const { ms, cpuMs } = await measureWindow(cmd.warmupMs, cmd.durationMs);
  phase = 'idle';
  reply({
    id: cmd.id,
    pieces: streamPieces,
    answers: streamAnswers,
    errors: streamErrors,
    ms,
    cpuMs,
    samples: streamSamples.take(),
    first: firstSamples.take(),
    firstRaw: firstRaw.take(),
  });
}

let fanCpu0 = process.cpuUsage();
let fanTotal = 0;
let fanCount = new Uint32Array(0);
let fanT0 = 0;

async function fanoutStart(cmd: Extract<Cmd, { op: 'fanout-start' }>): Promise<void> {
  for (const c of conns) c.state = undefined;
  fanTotal = cmd.total;
  fanCount = new Uint32Array(cmd.total);
  fanDelivered = 0;
  fanDup = 0;
  fanSamples = new Samples();
  phase = 'fanout';
  fanCpu0 = process.cpuUsage();
  fanT0 = performance.now();
  reply({ id: cmd.id });
}

async function fanoutStop(cmd: Extract<Cmd, { op: 'fanout-stop' }>): Promise<void> {
  const cpu = process.cpuUsage(fanCpu0);
  const ms = performance.now() - fanT0;
  phase = 'idle';
  const lost = conns.length * cmd.total - fanDelivered;
  reply({ id: cmd.id, delivered: fanDelivered, dup: fanDup, lost, ms, cpuMs: (cpu.user + cpu.system) / 1000, samples: fanSamples.take(), closed: closedDuring });
}

process.on('message', (cmd: Cmd) => void onCommand(cmd));

async function onCommand(cmd: Cmd): Promise<void> {
  switch (cmd.op) {
    case 'open':
      return open(cmd);
    case 'chat':
      return chat(cmd);
    case 'fanout-start':
      return fanoutStart(cmd);
    case 'fanout-stop':
      return fanoutStop(cmd);
    case 'stream':
      return streamPhase(cmd);
    case 'close': {
      for (const c of conns.splice(0)) c.close();
      closedDuring = 0;
      await new Promise((r) => setTimeout(r, 200));
      return reply({ id: cmd.id });
    }
    case 'exit':
      process.exit(0);
  }
}
process.send!({ ready: true });
