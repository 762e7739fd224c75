/**
 * The browser side served by the gateway:
 *   GET /widget.js, /widget.mjs   the SDK bundle (built by `make build` into
 *                                 dist/sdk/), with caching headers
 *   GET /demo                     a small chat page using the SDK (DEMO_PAGE)
 *   GET /demo/token               development only: a widget token signed
 *                                 with the development secret the gateway
 *                                 generated (no JWT key configured); never
 *                                 exists in production (NODE_ENV=production)
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { TemplatedApp } from '@trufflesuite/uws-js-unofficial';
import { createSigner } from 'fast-jwt';
import { isValidId } from '../auth/ids.js';
import type { Config } from '../config/index.js';
import type { Res } from './http.js';
import { sendJson } from './http.js';

interface Asset {
  body: Buffer;
  etag: string;
  type: string;
}

/** The built bundle next to this module (dist/), or in dist/ when running from src/ (tests). */
function loadAsset(name: string, type: string): Asset | undefined {
  for (const u of [new URL(`../sdk/${name}`, import.meta.url), new URL(`../../dist/sdk/${name}`, import.meta.url)]) {
    const f = fileURLToPath(u);
    if (!existsSync(f)) continue;
    const body = readFileSync(f);
    return { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` };
  }
  return undefined;
}

function serveAsset(app: TemplatedApp, path: string, asset: Asset | undefined): void {
  app.get(path, (res, req) => {
    const r = res as Res;
    if (!asset) return sendJson(r, 404, { error: 'The SDK is not built: run make build' });
    if (req.getHeader('if-none-match') === asset.etag) {
      r.writeStatus('304 Not Modified').writeHeader('etag', asset.etag).end();
      return;
    }
    r.writeStatus('200 OK')
      .writeHeader('content-type', asset.type)
      .writeHeader('cache-control', 'public, max-age=3600')
      .writeHeader('etag', asset.etag)
      .writeHeader('access-control-allow-origin', '*')
      .end(asset.body);
  });
}

export function mountBrowser(app: TemplatedApp, cfg: Pick<Config, 'demoPage' | 'production' | 'jwt'>): void {
  serveAsset(app, '/widget.js', loadAsset('widget.js', 'application/javascript; charset=utf-8'));
  serveAsset(app, '/widget.mjs', loadAsset('widget.mjs', 'application/javascript; charset=utf-8'));
  if (!cfg.demoPage) return;
  app.get('/demo', (res) => {
    (res as Res).writeStatus('200 OK').writeHeader('content-type', 'text/html; charset=utf-8').writeHeader('cache-control', 'no-store').end(DEMO_HTML);
  });
  // The development token endpoint: only outside production, and only with the
  // development secret the gateway generated itself (never a real key).
  if (cfg.production || !cfg.jwt.generated) return;
  const sign = createSigner({ key: cfg.jwt.key, algorithm: cfg.jwt.algorithms[0] as 'HS256' });
  app.get('/demo/token', (res, req) => {
    const creator = req.getQuery('creator') || 'demo';
    const ttl = Math.min(86_400, Math.max(1, Number(req.getQuery('ttl') || '3600') || 3600));
    if (!isValidId(creator)) return sendJson(res as Res, 400, { error: 'Invalid creator id' });
    const token = sign({ creator_id: creator, exp: Math.floor(Date.now() / 1000) + ttl });
    (res as Res).writeStatus('200 OK').writeHeader('content-type', 'text/plain').writeHeader('cache-control', 'no-store').end(token);
  });
}

/**
 * The demo page. Query parameters: creator (default demo), session,
 * heartbeat (ms), token (a fixed token instead of /demo/token), once (the
 * fixed token is not refreshed).
 */
const DEMO_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>channel-gateway demo</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0; background: #eef1f5; }
  main { max-width: 560px; margin: 24px auto; background: #fff; border-radius: 12px; box-shadow: 0 2px 12px #0002; display: flex; flex-direction: column; height: 80vh; }
  header { padding: 12px 16px; border-bottom: 1px solid #e3e6ea; display: flex; justify-content: space-between; }
  #state { font-size: 13px; padding: 2px 8px; border-radius: 10px; background: #ddd; }
  #state.open { background: #c6f0d0; } #state.reconnecting { background: #fde9b8; } #state.closed { background: #f6c7c7; }
  #log { flex: 1; overflow-y: auto; padding: 12px 16px; display: flex; flex-direction: column; gap: 8px; }
  .msg { max-width: 80%; padding: 8px 12px; border-radius: 12px; white-space: pre-wrap; }
  .me { align-self: flex-end; background: #2f6fed; color: #fff; } .ai { align-self: flex-start; background: #f0f2f5; }
  .sys { align-self: center; font-size: 12px; color: #777; } .err { align-self: center; color: #b00020; font-size: 13px; }
  #typing { height: 20px; padding: 0 16px; color: #777; font-size: 13px; }
  form { display: flex; gap: 8px; padding: 12px 16px; border-top: 1px solid #e3e6ea; }
  input { flex: 1; padding: 8px 12px; border: 1px solid #ccd; border-radius: 8px; font: inherit; }
  button { padding: 8px 16px; border: 0; border-radius: 8px; background: #2f6fed; color: #fff; font: inherit; }
</style></head>
<body><main>
<header><strong>Chat</strong><span id="state">connecting</span></header>
<div id="log" aria-live="polite"></div>
<div id="typing"></div>
<form id="form"><input id="input" autocomplete="off" placeholder="Ask something"><button>Send</button></form>
</main>
<script src="/widget.js"></script>
<script>
  const q = new URLSearchParams(location.search);
  const creator = q.get('creator') || 'demo';
  const fixed = q.get('token');
  let first = true;
  const getToken = async () => {
    if (fixed && (first || q.has('once'))) { first = false; return fixed; }
    const r = await fetch('/demo/token?creator=' + encodeURIComponent(creator));
    if (!r.ok) throw new Error('no token');
    return r.text();
  };
  const log = document.getElementById('log');
  const add = (cls, text) => { const d = document.createElement('div'); d.className = 'msg ' + cls; d.textContent = text; log.appendChild(d); log.scrollTop = log.scrollHeight; return d; };
  const answers = new Map();
  const client = ChannelWidget.createWidgetClient({
    url: location.origin.replace(/^http/, 'ws'), creatorId: creator, getToken,
    sessionId: q.get('session') || undefined,
    heartbeatMs: Number(q.get('heartbeat')) || 25000, pongTimeoutMs: Number(q.get('heartbeat')) || 10000,
  });
  window.chat = client;
  window.seen = { answers: [], broadcasts: [], lost: [], statuses: [] };
  const state = document.getElementById('state');
  client.on('status', (s) => { state.textContent = s.status + (s.code ? ' (' + s.code + ')' : ''); state.className = s.status; window.seen.statuses.push(s); });
  client.on('typing', (on) => { document.getElementById('typing').textContent = on ? 'typing...' : ''; });
  client.on('chunk', (c) => { let d = answers.get(c.messageId); if (!d) answers.set(c.messageId, d = add('ai', '')); d.textContent = c.text; });
  client.on('answer', (a) => {
    let d = answers.get(a.message_id); if (!d) answers.set(a.message_id, d = add('ai', ''));
    d.textContent = a.content; d.dataset.offset = a.offset; window.seen.answers.push({ id: a.message_id, offset: a.offset, content: a.content, cmid: a.client_message_id });
  });
  client.on('broadcast', (b) => { add('sys', 'broadcast: ' + JSON.stringify(b)); window.seen.broadcasts.push(b); });
  client.on('message', (m) => add('sys', 'message: ' + JSON.stringify(m)));
  client.on('error', (e) => { add('err', e.error); if (e.message_id) answers.get(e.message_id)?.remove(); });
  client.on('continuity_lost', (c) => { add('sys', 'some ' + c.stream + ' messages could not be recovered'); window.seen.lost.push(c); });
  document.getElementById('form').addEventListener('submit', (e) => {
    e.preventDefault(); const input = document.getElementById('input'); const text = input.value.trim(); if (!text) return;
    add('me', text); client.send(text); input.value = '';
  });
</script></body></html>
`;
