/**
 * A small mock AI engine for benchmarks, its own process:
 * `PORT=... DELAY_MS=200 node --import tsx bench/lib/mock-engine.ts`.
 *
 * PIECES=0 (default): answers every POST after DELAY_MS (default 200) with
 * {response, confidence, sources}.
 * PIECES=N: streams NDJSON instead: after DELAY_MS, N pieces PIECE_MS apart,
 * each `{"delta":"[T] "}` where T is the time it was written
 * (performance.timeOrigin + now, ms, the clock the load generator reads),
 * then `{"confidence":0.9,"sources":[]}`. The client subtracts T from the
 * time it got the piece: the latency the gateway added, the engine's own
 * pacing excluded.
 */
import http from 'node:http';
import { performance } from 'node:perf_hooks';

const delay = Number(process.env.DELAY_MS ?? 200);
const pieces = Number(process.env.PIECES ?? 0);
const pieceMs = Number(process.env.PIECE_MS ?? 50);
const now = () => (performance.timeOrigin + performance.now()).toFixed(3);

function stream(res: http.ServerResponse): void {
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  let sent = 0;
  const tick = () => {
    if (res.destroyed) return;
    if (sent === pieces) {
      res.end('{"confidence":0.9,"sources":[]}\n');
      return;
    }
    sent++;
    res.write(`{"delta":"[${now()}] "}\n`);
    setTimeout(tick, pieceMs);
  };
  setTimeout(tick, delay);
}

const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => (body += d));
  req.on('end', () => {
    if (pieces > 0) return stream(res);
    setTimeout(() => {
      let query = '';
      try {
        query = JSON.parse(body).query;
      } catch {
        /* answer anyway */
      }
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ response: `answer to ${query}`, confidence: 0.9, sources: [] }));
    }, delay);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.env.PORT), '127.0.0.1', () => process.send?.('ready'));
