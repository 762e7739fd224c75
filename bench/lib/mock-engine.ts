/**
 * A small mock AI engine for benchmarks: answers every POST after DELAY_MS
 * (default 200) with {response, confidence, sources}. Runs as its own
 * process: `PORT=... DELAY_MS=200 node --import tsx bench/lib/mock-engine.ts`.
 */
import http from 'node:http';

const delay = Number(process.env.DELAY_MS ?? 200);
const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => (body += d));
  req.on('end', () => {
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
