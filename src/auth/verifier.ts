/**
 * Token verification with fast-jwt, done in the uWS upgrade handler before
 * any per-connection state exists.
 *
 * Rules: the signature must verify with the configured key (a shared secret,
 * a PEM public key, or the JWKS key named by the token's `kid`); the
 * header's `alg` must be one of JWT_ALGORITHMS (so `alg: none` and HS/RS
 * confusion are refused); `exp`/`nbf` are enforced with 5 s of clock
 * tolerance; `iss` and `aud` when JWT_ISSUER / JWT_AUDIENCE are set.
 * A verified token is kept by the token itself (auth/jwks.ts byToken), and
 * fast-jwt's own bounded cache stands behind that for the rest (refusals,
 * tokens too long to keep), so a reconnect storm with the same tokens does
 * not redo the signature work.
 *
 * Verification is synchronous except for a token whose JWKS key is not known
 * yet: then the result is a promise (one bounded JWKS refresh).
 */
import { createDecoder } from 'fast-jwt';
import type { Config } from '../config/index.js';
import type { Logger } from '../observability/log.js';
import { JwksKeys, keyVerifier, type VerifyFn } from './jwks.js';

export interface Claims {
  creator_id?: unknown;
  scope?: unknown;
  origins?: unknown;
  [claim: string]: unknown;
}

export type WidgetAuth = { ok: true; claims: Claims } | { ok: false; reason: string; expired?: boolean };
export type PublishAuth = 'ok' | 'unauthenticated' | 'forbidden';

export interface TokenVerifier {
  /**
   * Verifies a widget token for `creatorId` (its `creator_id` claim must
   * match) coming from `origin` (the Origin header, '' if none): a token with
   * an `origins` claim is valid only from those origins.
   */
  verifyWidget(token: string, creatorId: string, origin: string): WidgetAuth | Promise<WidgetAuth>;
  /**
   * Verifies a service token for publishing to `creatorId` (or, with no
   * creatorId, to any connection): `scope` (a space-separated string or an
   * array) must contain `publish`; a token with a `creator_id` claim may only
   * publish to that creator.
   */
  verifyPublisher(token: string, creatorId: string | undefined): PublishAuth | Promise<PublishAuth>;
  /** Fetches remote keys (JWKS) before serving; no-op for static keys. */
  start(): Promise<void>;
  close(): void;
}

const decode = createDecoder({ complete: true });

function widgetCheck(c: Claims | string, creatorId: string, origin: string): WidgetAuth {
  if (typeof c === 'string') return { ok: false, reason: c, expired: c === 'FAST_JWT_EXPIRED' };
  if (c.creator_id !== creatorId) return { ok: false, reason: 'creator_id claim does not match the path' };
  if (c.origins !== undefined) {
    const allowed = typeof c.origins === 'string' ? [c.origins] : Array.isArray(c.origins) ? c.origins : [];
    if (!allowed.includes(origin)) return { ok: false, reason: 'origin not allowed by the token' };
  }
  return { ok: true, claims: c };
}

function publishCheck(c: Claims | string, creatorId: string | undefined): PublishAuth {
  if (typeof c === 'string') return 'unauthenticated';
  const scope = c.scope;
  const scopes = typeof scope === 'string' ? scope.split(' ') : Array.isArray(scope) ? scope : [];
  if (!scopes.includes('publish')) return 'forbidden';
  if (c.creator_id !== undefined && c.creator_id !== creatorId) return 'forbidden';
  return 'ok';
}

function run(verify: VerifyFn, token: string): Claims | string {
  try {
    const c = verify(token);
    if (typeof c !== 'object' || c === null) return 'payload is not an object';
    return c;
  } catch (err) {
    return (err as { code?: string }).code ?? 'invalid token';
  }
}

export function createTokenVerifier(cfg: Pick<Config, 'jwt'>, log?: Logger): TokenVerifier {
  const { jwt } = cfg;
  let claimsOf: (token: string) => Claims | string | Promise<Claims | string>;
  let jwks: JwksKeys | undefined;

  if (jwt.jwksUrl) {
    const keys = new JwksKeys({
      url: jwt.jwksUrl,
      algorithms: jwt.algorithms,
      refreshMs: jwt.jwksRefreshS * 1000,
      minRefreshMs: jwt.jwksMinRefreshS * 1000,
      makeVerifier: (pem) => keyVerifier(pem, jwt.algorithms, jwt.issuer, jwt.audience),
      log: log!,
    });
    jwks = keys;
    claimsOf = (token) => {
      let kid: unknown;
      try {
        kid = (decode(token) as { header: { kid?: unknown } }).header.kid;
      } catch {
        return 'malformed token';
      }
      if (typeof kid !== 'string' || kid.length > 256) return 'token has no usable kid';
      const v = keys.verifierFor(kid);
      if (v) return run(v, token);
      // Unknown kid: maybe the keys rotated. One bounded refresh, then decide.
      return keys.refresh().then(() => {
        const again = keys.verifierFor(kid as string);
        return again ? run(again, token) : 'unknown kid';
      });
    };
  } else {
    const verify = keyVerifier(jwt.key, jwt.algorithms, jwt.issuer, jwt.audience);
    claimsOf = (token) => run(verify, token);
  }

  return {
    verifyWidget(token, creatorId, origin) {
      const c = claimsOf(token);
      return c instanceof Promise ? c.then((x) => widgetCheck(x, creatorId, origin)) : widgetCheck(c, creatorId, origin);
    },
    verifyPublisher(token, creatorId) {
      const c = claimsOf(token);
      return c instanceof Promise ? c.then((x) => publishCheck(x, creatorId)) : publishCheck(c, creatorId);
    },
    async start() {
      await jwks?.start();
    },
    close() {
      jwks?.close();
    },
  };
}
