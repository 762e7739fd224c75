/**
 * Baseline: bare uWS, the physical limit of this stack. The same frames as
 * the gateway (connection_status, typing/ai_response/typing, pong, broadcast
 * fan-out through native topics and a primary relay over cluster IPC), with
 * no authentication, validation, rate limiting, ordering or registry.
 *
 * With AI_ENGINE_URL set, a user_message is relayed to that engine instead
 * (its NDJSON answer read through undici's dispatch, as the gateway does):
 * each line's delta goes out at once as an ai_response_chunk, then the
 * ai_response. No typing frames, no history, no merging: the least work a
 * relay of streamed answers can do (the streaming benchmark's floor).
 *
 * With REPLAY_FRAMES=N, a socket whose URL asks `resume_broadcast` gets N
 * widget.v2 broadcast frames (offsets 1..N, a ~100-byte body, built once at
 * start) at once after connection_status: the least work a resume can do
 * (the resume benchmark's floor); with `replay=batch` as well, the same
 * frames in `replay` frames of at most 64 KiB.
 *
 * With HISTORY_HOP=1, every ai_response carries its session's next offset
 * (a leading `"offset":N`, as the gateway's; a session per socket) and is
 * also sent to the primary, which keeps the last 100 of each session: the
 * frames of one event-loop turn in one IPC message, each the string sent
 * to the socket, kept as it came in a ring per session (as the gateway's
 * primary keeps them).
 * The least work history held by the primary can do (embedded widget.v2
 * chat's floor: the issue asks the primary to hold the streams, so every
 * answer crosses a process).
 *
 * With HISTORY_REDIS=<redis URL>, every ai_response is appended to its
 * session's list in Redis first, numbered there: the answers of one
 * event-loop turn in one script run (HINCRBY, RPUSH, LTRIM to 100, PEXPIRE
 * per frame), then each leaves with its offset and typing false, after the
 * typing indicator that went at once. The least work history in Redis can
 * do (Redis-mode widget.v2 chat's floor: one round trip before the answer).
 *
 *   PORT=9101 WORKERS=2 node --import tsx bench/baselines/uws-bare.ts
 */
import cluster from 'node:cluster';
import { randomUUID } from 'node:crypto';
import { Pool, type Dispatcher } from 'undici';
import { Redis } from 'ioredis';
import type { WebSocket } from '@trufflesuite/uws-js-unofficial';
import { loadUws } from '../../src/uws/loader.js';
import { exitOnSigterm, forkWorkers, stopWorkersOnSigterm } from './cluster.js';

const PORT = Number(process.env.PORT ?? 9101);
const WORKERS = Number(process.env.WORKERS ?? 2);
const HISTORY_HOP = process.env.HISTORY_HOP === '1';
type UserData = { creator: string; closed?: boolean; resume?: boolean; batch?: boolean; session?: string; offset?: number };
/** HISTORY_HOP: the frames of a turn, to the primary: [session, offset, frame] each. */
type Put = [string, number, string];
const HISTORY_REDIS = process.env.HISTORY_REDIS;
/** HISTORY_REDIS: KEYS, a session's hash per frame (its list: the same name ending in l); ARGV, the frames. The offsets. */
const APPEND = `
local out = {}
for i = 1, #KEYS do
  local m = KEYS[i]
  local l = string.sub(m, 1, -2) .. 'l'
  out[i] = redis.call('HINCRBY', m, 'o', 1)
  if redis.call('RPUSH', l, ARGV[i]) > 100 then redis.call('LTRIM', l, -100, -1) end
  redis.call('PEXPIRE', m, 3600000)
  redis.call('PEXPIRE', l, 3600000)
end
return out
`;

if (cluster.isPrimary) {
  const workers = forkWorkers(WORKERS);
  /** HISTORY_HOP: the last 100 frames of each session, in a ring (the oldest at `head` once full). */
  const history = new Map<string, { frames: string[]; head: number }>();
  for (const w of workers) {
    w.on('message', (m: { topic: string; payload: Uint8Array } | { puts: Put[] }) => {
      if ('puts' in m) {
        for (const [session, , frame] of m.puts) {
          let ring = history.get(session);
          if (!ring) history.set(session, (ring = { frames: [], head: 0 }));
          if (ring.frames.length < 100) ring.frames.push(frame);
          else {
            ring.frames[ring.head] = frame;
            ring.head = (ring.head + 1) % 100;
          }
        }
        return;
      }
      for (const o of workers) if (o !== w && o.isConnected()) o.send(m);
    });
  }
  stopWorkersOnSigterm(workers);
} else {
  exitOnSigterm();
  const { uws } = loadUws();
  const app = uws.App();
  const body = 'x'.repeat(100);
  const replay = Array.from({ length: Number(process.env.REPLAY_FRAMES ?? 0) }, (_, i) => `{"type":"broadcast","offset":${i + 1},"data":{"type":"bench","seq":${i},"body":"${body}"}}`);
  // replay=batch: the same frames in `replay` frames of at most 64 KiB (as the gateway cuts them).
  const batches: string[] = [];
  for (let i = 0; i < replay.length; ) {
    const part: string[] = [];
    let bytes = 0;
    while (i < replay.length && (part.length === 0 || bytes + replay[i]!.length <= 64 * 1024)) {
      bytes += replay[i]!.length;
      part.push(replay[i++]!);
    }
    batches.push(`{"type":"replay","stream":"broadcast","frames":[${part.join(',')}]}`);
  }
  /** HISTORY_REDIS: the answers of this turn, waiting for their offsets. */
  type Waiting = { ws: WebSocket<UserData>; key: string; body: string; typingOff: string };
  const redis = HISTORY_REDIS ? new Redis(HISTORY_REDIS) : undefined;
  redis?.defineCommand('floorAppend', { lua: APPEND });
  let waiting: Waiting[] = [];
  const flushWaiting = () => {
    const batch = waiting;
    waiting = [];
    const keys = batch.map((w) => w.key);
    void (redis as unknown as { floorAppend(n: number, ...a: string[]): Promise<number[]> }).floorAppend(keys.length, ...keys, ...batch.map((w) => `{${w.body}`)).then((offsets) => {
      batch.forEach((w, i) => {
        if (w.ws.getUserData().closed) return;
        w.ws.cork(() => {
          w.ws.send(`{"offset":${offsets[i]},${w.body}`);
          w.ws.send(w.typingOff);
        });
      });
    });
  };
  let puts: Put[] = [];
  const flushPuts = () => {
    const m = puts;
    puts = [];
    process.send!({ puts: m });
  };
  const engine = process.env.AI_ENGINE_URL ? new URL(process.env.AI_ENGINE_URL) : undefined;
  const pool = engine ? new Pool(engine.origin, { connections: Number(process.env.AI_ENGINE_CONNECTIONS ?? 256), pipelining: 1 }) : undefined;
  /** Relays one streamed answer: a chunk per NDJSON line, then the answer. */
  const relay = (ws: WebSocket<UserData>, query: string): void => {
    const messageId = randomUUID();
    let buf = '';
    let index = 0;
    const parts: string[] = [];
    const send = (frame: string) => {
      if (!ws.getUserData().closed) ws.send(frame);
    };
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart() {},
      onResponseStart() {},
      onResponseData(_c, chunk: Buffer) {
        buf += chunk.toString();
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = JSON.parse(buf.slice(0, i)) as { delta?: string };
          buf = buf.slice(i + 1);
          if (typeof line.delta !== 'string') continue;
          send(`{"type":"ai_response_chunk","message_id":"${messageId}","index":${index},"delta":${JSON.stringify(line.delta)}}`);
          index += line.delta.length;
          parts.push(line.delta);
        }
      },
      onResponseEnd() {
        send(`{"type":"ai_response","content":${JSON.stringify(parts.join(''))},"confidence":0.9,"sources":[],"timestamp":"${new Date().toISOString()}","message_id":"${messageId}"}`);
      },
      onResponseError() {
        send('{"type":"error","message":"Failed to process message"}');
      },
    };
    pool!.dispatch({ path: `${engine!.pathname}${engine!.search}`, method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) }, handler);
  };
  app.ws<UserData>('/api/v1/channels/widget/:creator_id/connect', {
    maxPayloadLength: 256 * 1024,
    idleTimeout: 120,
    maxBackpressure: 1024 * 1024,
    upgrade(res, req, ctx) {
      res.upgrade(
        { creator: req.getParameter(0), resume: req.getQuery('resume_broadcast') !== undefined, batch: req.getQuery('replay') === 'batch' },
        req.getHeader('sec-websocket-key'),
        req.getHeader('sec-websocket-protocol'),
        req.getHeader('sec-websocket-extensions'),
        ctx,
      );
    },
    close(ws) {
      ws.getUserData().closed = true;
    },
    open(ws) {
      ws.subscribe(`c/${ws.getUserData().creator}`);
      const session = randomUUID();
      if (HISTORY_HOP || HISTORY_REDIS) Object.assign(ws.getUserData(), { session, offset: 0 });
      ws.send(JSON.stringify({ type: 'connection_status', status: 'connected', details: { session_id: session }, timestamp: new Date().toISOString() }));
      if (ws.getUserData().resume) for (const f of ws.getUserData().batch ? batches : replay) ws.send(f);
    },
    message(ws, data) {
      const m = JSON.parse(Buffer.from(data).toString());
      if (m.type === 'ping') {
        ws.send('{"type":"pong"}');
        return;
      }
      if (pool) return relay(ws, m.content);
      const ts = new Date().toISOString();
      ws.send(`{"type":"typing_indicator","is_typing":true,"timestamp":"${ts}"}`);
      // The answer's fields as text, as the gateway writes them (protocol/frames.ts aiResponse: on
      // Node 20, far cheaper than JSON.stringify of the object); `{` or an offset goes before.
      const answer = `"type":"ai_response","content":${JSON.stringify(m.content)},"confidence":1,"sources":[],"timestamp":"${ts}","message_id":"${randomUUID()}"}`;
      if (HISTORY_REDIS) {
        if (waiting.length === 0) setImmediate(flushWaiting);
        waiting.push({ ws, key: `floor:{${ws.getUserData().session}}:m`, body: answer, typingOff: `{"type":"typing_indicator","is_typing":false,"timestamp":"${ts}"}` });
        return;
      }
      if (HISTORY_HOP) {
        const u = ws.getUserData();
        const frame = `{"offset":${++u.offset!},${answer}`;
        ws.send(frame);
        if (puts.length === 0) setImmediate(flushPuts);
        puts.push([u.session!, u.offset!, frame]);
      } else ws.send(`{${answer}`);
      ws.send(`{"type":"typing_indicator","is_typing":false,"timestamp":"${ts}"}`);
    },
  });
  app.post('/api/v1/creators/:creator_id/broadcast', (res, req) => {
    const topic = `c/${req.getParameter(0)}`;
    const chunks: Buffer[] = [];
    res.onAborted(() => {});
    res.onData((chunk: ArrayBuffer, last: boolean) => {
      chunks.push(Buffer.from(Buffer.from(chunk)));
      if (!last) return;
      const body = Buffer.concat(chunks);
      app.publish(topic, body, false);
      process.send!({ topic, payload: body });
      res.cork(() => res.writeStatus('202 Accepted').end('{"status":"accepted"}'));
    });
  });
  app.get('/healthz', (res) => void res.end('{"status":"ok"}'));
  process.on('message', (m: { topic: string; payload: Uint8Array }) => app.publish(m.topic, m.payload, false));
  app.listen('0.0.0.0', PORT, (ls) => {
    if (!ls) process.exit(1);
  });
}
