/**
 * Baseline: what a typical Node team builds with the `ws` library - the same
 * protocol (JWT auth with fast-jwt, JSON validation, typing/ai_response/
 * typing, broadcasts relayed between cluster workers over IPC), on Node's
 * http server and cluster (the primary distributes connections).
 *
 *   PORT=9102 WORKERS=2 JWT_SECRET=... node --import tsx bench/baselines/ws-server.ts
 */
import cluster from 'node:cluster';
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { WebSocketServer, type WebSocket } from 'ws';
import { createVerifier } from 'fast-jwt';
import { exitOnSigterm, forkWorkers, stopWorkersOnSigterm } from './cluster.js';

const PORT = Number(process.env.PORT ?? 9102);
const WORKERS = Number(process.env.WORKERS ?? 2);

if (cluster.isPrimary) {
  const workers = forkWorkers(WORKERS);
  for (const w of workers) {
    w.on('message', (m: { creator: string; body: string }) => {
      for (const o of workers) if (o !== w && o.isConnected()) o.send(m);
    });
  }
  stopWorkersOnSigterm(workers);
} else {
  exitOnSigterm();
  const verify = createVerifier({ key: process.env.JWT_SECRET!, algorithms: ['HS256'], cache: 10_000 });
  const byCreator = new Map<string, Set<WebSocket>>();
  const deliver = (creator: string, body: string) => {
    for (const ws of byCreator.get(creator) ?? []) ws.send(body);
  };
  const server = http.createServer((req, res) => {
    const m = /^\/api\/v1\/creators\/([^/]+)\/broadcast$/.exec(req.url ?? '');
    if (req.method === 'POST' && m) {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        JSON.parse(body);
        deliver(m[1]!, body);
        process.send!({ creator: m[1], body });
        res.writeHead(202).end('{"status":"accepted"}');
      });
      return;
    }
    res.writeHead(200).end('{"status":"ok"}');
  });
  const wss = new WebSocketServer({ noServer: true, maxPayload: 65536 });
  server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const creator = /^\/api\/v1\/channels\/widget\/([^/]+)\/connect$/.exec(url.pathname)?.[1] ?? '';
    wss.handleUpgrade(req, socket, head, (ws) => {
      try {
        if (verify(url.searchParams.get('token') ?? '').creator_id !== creator) throw new Error('creator');
      } catch {
        ws.close(4003, 'Invalid or unauthorized token');
        return;
      }
      let set = byCreator.get(creator);
      if (!set) byCreator.set(creator, (set = new Set()));
      set.add(ws);
      const session = url.searchParams.get('session_id') || randomUUID();
      ws.send(JSON.stringify({ type: 'connection_status', status: 'connected', details: { session_id: session }, timestamp: new Date().toISOString() }));
      ws.on('message', (data) => {
        let m: { type?: unknown; content?: unknown } | null;
        try {
          m = JSON.parse(data.toString());
        } catch {
          ws.send(JSON.stringify({ type: 'error', error: 'Invalid JSON format', timestamp: new Date().toISOString() }));
          return;
        }
        if (m?.type === 'ping') return ws.send('{"type":"pong"}');
        if (m?.type !== 'user_message' || typeof m.content !== 'string') {
          return ws.send(JSON.stringify({ type: 'error', error: `Unknown message type: ${m?.type}`, timestamp: new Date().toISOString() }));
        }
        const ts = () => new Date().toISOString();
        ws.send(JSON.stringify({ type: 'typing_indicator', is_typing: true, timestamp: ts() }));
        void Promise.resolve({ response: m.content.trim(), confidence: 1, sources: [] }).then((a) => {
          ws.send(JSON.stringify({ type: 'ai_response', content: a.response, confidence: a.confidence, sources: a.sources, timestamp: ts(), message_id: randomUUID() }));
          ws.send(JSON.stringify({ type: 'typing_indicator', is_typing: false, timestamp: ts() }));
        });
      });
      ws.on('close', () => set!.delete(ws));
      ws.on('error', () => {});
    });
  });
  process.on('message', (m: { creator: string; body: string }) => deliver(m.creator, m.body));
  server.listen(PORT, '0.0.0.0');
}
