/**
 * Baseline: bare uWS, the physical limit of this stack. The same frames as
 * the gateway (connection_status, typing/ai_response/typing, pong, broadcast
 * fan-out through native topics and a primary relay over cluster IPC), with
 * no authentication, validation, rate limiting, ordering or registry.
 *
 *   PORT=9101 WORKERS=2 node --import tsx bench/baselines/uws-bare.ts
 */
import cluster from 'node:cluster';
import { randomUUID } from 'node:crypto';
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
  app.ws<{ creator: string }>('/api/v1/channels/widget/:creator_id/connect', {
    maxPayloadLength: 256 * 1024,
    idleTimeout: 120,
    maxBackpressure: 1024 * 1024,
    upgrade(res, req, ctx) {
      res.upgrade(
        { creator: req.getParameter(0) },
        req.getHeader('sec-websocket-key'),
        req.getHeader('sec-websocket-protocol'),
        req.getHeader('sec-websocket-extensions'),
        ctx,
      );
    },
    open(ws) {
      ws.subscribe(`c/${ws.getUserData().creator}`);
      ws.send(JSON.stringify({ type: 'connection_status', status: 'connected', details: { session_id: randomUUID() }, timestamp: new Date().toISOString() }));
    },
    message(ws, data) {
      const m = JSON.parse(Buffer.from(data).toString());
      if (m.type === 'ping') {
        ws.send('{"type":"pong"}');
        return;
      }
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
