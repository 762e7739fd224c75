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
 *   PORT=9101 WORKERS=2 node --import tsx bench/baselines/uws-bare.ts
 */
import cluster from 'node:cluster';
import { randomUUID } from 'node:crypto';
import { Pool, type Dispatcher } from 'undici';
import type { WebSocket } from '@trufflesuite/uws-js-unofficial';
import { loadUws } from '../../src/uws/loader.js';

const PORT = Number(process.env.PORT ?? 9101);
const WORKERS = Number(process.env.WORKERS ?? 2);

if (cluster.isPrimary) {
  cluster.setupPrimary({ serialization: 'advanced' });
  const workers = Array.from({ length: WORKERS }, () => cluster.fork());
  for (const w of workers) {
    w.on('message', (m: { topic: string; payload: Uint8Array }) => {
      for (const o of workers) if (o !== w && o.isConnected()) o.send(m);
    });
  }
  process.on('SIGTERM', () => {
    for (const w of workers) w.process.kill('SIGKILL');
    process.exit(0);
  });
} else {
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
  const engine = process.env.AI_ENGINE_URL ? new URL(process.env.AI_ENGINE_URL) : undefined;
  const pool = engine ? new Pool(engine.origin, { connections: Number(process.env.AI_ENGINE_CONNECTIONS ?? 256), pipelining: 1 }) : undefined;
  /** Relays one streamed answer: a chunk per NDJSON line, then the answer. */
  const relay = (ws: WebSocket<{ creator: string; closed?: boolean; resume?: boolean; batch?: boolean }>, query: string): void => {
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
        send(JSON.stringify({ type: 'ai_response', content: parts.join(''), confidence: 0.9, sources: [], timestamp: new Date().toISOString(), message_id: messageId }));
      },
      onResponseError() {
        send('{"type":"error","message":"Failed to process message"}');
      },
    };
    pool!.dispatch({ path: `${engine!.pathname}${engine!.search}`, method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) }, handler);
  };
  app.ws<{ creator: string; closed?: boolean; resume?: boolean; batch?: boolean }>('/api/v1/channels/widget/:creator_id/connect', {
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
      ws.send(JSON.stringify({ type: 'connection_status', status: 'connected', details: { session_id: randomUUID() }, timestamp: new Date().toISOString() }));
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
      ws.send(JSON.stringify({ type: 'ai_response', content: m.content, confidence: 1, sources: [], timestamp: ts, message_id: randomUUID() }));
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
