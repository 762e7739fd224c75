/**
 * HTTP routes of a worker: health, readiness, stats, broadcast and targeted
 * sends. Every async handler copies what it needs from `req` first, guards
 * against aborts and corks its answer (see http.ts).
 */
import type { TemplatedApp, HttpRequest } from '@trufflesuite/uws-js-unofficial';
import type { TokenVerifier } from '../auth/verifier.js';
import { isValidId } from '../auth/ids.js';
import type { ChannelRouter } from '../channels/router.js';
import type { Fanout } from './fanout.js';
import type { ClusterStats } from '../cluster/view.js';
import { GatewayError } from '../errors.js';
import type { Logger } from '../observability/log.js';
import { BodyTooLarge, bearer, guard, readBody, sendJson, type Res } from './http.js';

export interface RouteDeps {
  verifier: TokenVerifier;
  fanout: Fanout;
  channels: ChannelRouter;
  log: Logger;
  maxBodyBytes: number;
  /** True while this worker serves (not shutting down). */
  serving: () => boolean;
  /** True when the whole node is ready (every worker up, bus connected). */
  ready: () => boolean;
  stats: () => Promise<ClusterStats>;
  /** A broadcast (gateway.ts): resolves once taken (stored, with history); false or a coded rejection: 503. */
  broadcast: (creatorId: string, json: string) => Promise<boolean>;
  metrics: () => Promise<string>;
  /** The Telegram webhook (channels/telegram/): the status to answer at once; absent: no bots configured. */
  telegram?: (creatorId: string, secret: string, body: Buffer) => number;
}

/** The largest Telegram update read (Telegram's own are a few KiB). */
export const TELEGRAM_MAX_UPDATE_BYTES = 1 << 20;

const NOT_FOUND = '{"error":"Not found"}';

/**
 * The widget port's routes: health and readiness (for the balancer), the
 * publishing API, and, unless an internal listener exists (`admin: false`),
 * stats and metrics too.
 */
export function mountRoutes(app: TemplatedApp, d: RouteDeps, o: { admin: boolean; browser?: (app: TemplatedApp) => void } = { admin: true }): void {
  mountHealth(app, d);
  if (o.admin) mountAdmin(app, d, false);
  mountPublishing(app, d);
  o.browser?.(app);
  app.any('/*', (res) => sendJson(res as Res, 404, NOT_FOUND));
}

/**
 * The internal listener (ADMIN_HOST:ADMIN_PORT, as Centrifugo's internal
 * port): stats, metrics, health and readiness, never exposed to visitors.
 */
export function mountAdminRoutes(app: TemplatedApp, d: RouteDeps): void {
  mountAdmin(app, d, true);
}

function mountHealth(app: TemplatedApp, d: RouteDeps): void {
  app.get('/healthz', (res) => {
    const ok = d.serving();
    sendJson(res as Res, ok ? 200 : 503, ok ? '{"status":"ok"}' : '{"status":"shutting_down"}');
  });

  app.get('/readyz', (res) => {
    const ok = d.serving() && d.ready();
    sendJson(res as Res, ok ? 200 : 503, ok ? '{"status":"ready"}' : '{"status":"not_ready"}');
  });

}

function mountAdmin(app: TemplatedApp, d: RouteDeps, withHealth: boolean): void {
  if (withHealth) mountHealth(app, d);
  app.get('/api/v1/stats', async (res) => {
    const r = guard(res as Res);
    try {
      const s = await d.stats();
      sendJson(r, 200, {
        total_connections: s.total_connections,
        connections_by_creator: s.connections_by_creator,
        connections_by_worker: s.connections_by_worker,
        workers: s.workers,
        workers_answered: s.workers_answered,
        last_check: new Date().toISOString(),
      });
    } catch (err) {
      d.log.error({ err: (err as Error).message }, 'stats failed');
      sendJson(r, 503, { error: 'Stats unavailable', reason: reasonOf(err) });
    }
  });

  app.get('/metrics', async (res) => {
    const r = guard(res as Res);
    try {
      const text = await d.metrics();
      if (r.done) return;
      r.done = true;
      r.cork(() => r.writeStatus('200 OK').writeHeader('content-type', 'text/plain; version=0.0.4; charset=utf-8').end(text));
    } catch (err) {
      d.log.error({ err: (err as Error).message }, 'metrics failed');
      sendJson(r, 503, { error: 'Metrics unavailable' });
    }
  });

  if (withHealth) app.any('/*', (res) => sendJson(res as Res, 404, NOT_FOUND));
}

function mountPublishing(app: TemplatedApp, d: RouteDeps): void {
  app.post('/api/v1/channels/telegram/:creator_id/webhook', (res, req) => {
    guard(res as Res);
    const creatorId = req.getParameter(0) ?? '';
    const secret = req.getHeader('x-telegram-bot-api-secret-token');
    const webhook = d.telegram;
    if (webhook === undefined || !isValidId(creatorId)) return sendJson(res as Res, 404, NOT_FOUND, true);
    readBody(res as Res, TELEGRAM_MAX_UPDATE_BYTES).then(
      (body) => {
        const status = webhook(creatorId, secret, body);
        sendJson(res as Res, status, status === 200 ? '{"ok":true}' : status === 401 ? '{"error":"Wrong secret token"}' : NOT_FOUND);
      },
      (err) => {
        if (err instanceof BodyTooLarge) sendJson(res as Res, 413, { error: `Body over ${TELEGRAM_MAX_UPDATE_BYTES} bytes` }, true);
      },
    );
  });

  app.post('/api/v1/creators/:creator_id/broadcast', (res, req) => {
    const creatorId = req.getParameter(0) ?? '';
    publishRoute(res as Res, req, d, creatorId, async (frame) => {
      if (!(await d.broadcast(creatorId, JSON.stringify(frame)))) {
        return { status: 503, body: { error: 'Broadcast refused: the bus cannot take it now', reason: 'overloaded' } };
      }
      return { status: 202, body: { status: 'accepted', creator_id: creatorId } };
    });
  });

  app.post('/api/v1/connections/:connection_id/messages', (res, req) => {
    const connectionId = req.getParameter(0) ?? '';
    publishRoute(res as Res, req, d, undefined, async (frame) => {
      const r = await d.channels.send('widget', connectionId, frame);
      if (r === 'sent') return { status: 202, body: { status: 'accepted', connection_id: connectionId } };
      return { status: 404, body: { error: 'No such connection' } };
    });
  });
}

type Publish = (frame: Record<string, unknown>) => Promise<{ status: number; body: unknown }>;

/**
 * The shared body of the publishing routes: bearer token with scope
 * `publish` (401/403), a JSON object body of bounded size (400/413), then
 * `publish`.
 */
function publishRoute(res: Res, req: HttpRequest, d: RouteDeps, creatorId: string | undefined, publish: Publish): void {
  guard(res);
  const token = bearer(req.getHeader('authorization'));
  const declared = Number(req.getHeader('content-length') || '0');
  if (creatorId !== undefined && !isValidId(creatorId)) return sendJson(res, 400, { error: 'Invalid creator id' }, true);
  if (token === undefined) return sendJson(res, 401, { error: 'Bearer token required' }, true);
  if (declared > d.maxBodyBytes) return sendJson(res, 413, { error: `Body over ${d.maxBodyBytes} bytes` }, true);
  // uWS drops body data nobody listens for: start reading now, check the token alongside.
  const reading = readBody(res, d.maxBodyBytes);
  reading.catch(() => {});
  Promise.resolve(d.verifier.verifyPublisher(token, creatorId)).then((auth) => {
    if (auth === 'unauthenticated') return sendJson(res, 401, { error: 'Invalid token' }, true);
    if (auth === 'forbidden') return sendJson(res, 403, { error: 'Token lacks the publish scope for this target' }, true);
    return afterAuth(res, d, reading, publish);
  }, () => sendJson(res, 500, { error: 'Token check failed' }, true));
}

function afterAuth(res: Res, d: RouteDeps, reading: Promise<Buffer>, publish: Publish): void {
  reading.then(
    async (body) => {
      let frame: unknown;
      try {
        frame = JSON.parse(body.toString('utf8'));
      } catch {
        return sendJson(res, 400, { error: 'Body is not valid JSON' });
      }
      if (typeof frame !== 'object' || frame === null || Array.isArray(frame)) {
        return sendJson(res, 400, { error: 'Body must be a JSON object' });
      }
      try {
        const out = await publish(frame as Record<string, unknown>);
        sendJson(res, out.status, out.body);
      } catch (err) {
        d.log.error({ err: (err as Error).message }, 'publish failed');
        if (err instanceof GatewayError) sendJson(res, 503, { error: 'Publish failed', reason: reasonOf(err) });
        else sendJson(res, 500, { error: 'Publish failed' });
      }
    },
    (err) => {
      if (err instanceof BodyTooLarge) sendJson(res, 413, { error: `Body over ${d.maxBodyBytes} bytes` }, true);
    },
  );
}

/** A short, stable reason for a 503, from the error's code (never its text). */
function reasonOf(err: unknown): string {
  if (!(err instanceof GatewayError)) return 'error';
  switch (err.code) {
    case 'GW_ERR_REDIS_TIMEOUT':
    case 'GW_ERR_IPC_TIMEOUT':
      return 'timeout';
    case 'GW_ERR_REDIS_UNAVAILABLE':
    case 'GW_ERR_CLOSED':
      return 'unavailable';
    case 'GW_ERR_OVERLOADED':
      return 'overloaded';
    default:
      return 'error';
  }
}
