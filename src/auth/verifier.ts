/**
 * Token verification with fast-jwt. Synchronous (the key is static), so it
 * runs inside the uWS upgrade handler before any per-connection state exists.
 *
 * Rules: the signature must verify with the configured key, the header's
 * `alg` must be one of JWT_ALGORITHMS (so `alg: none` and HS/RS confusion are
 * refused), `exp`/`nbf` are enforced with 5 s of clock tolerance. Verified
 * tokens are cached (bounded LRU inside fast-jwt) so a reconnect storm with
 * the same tokens does not redo the signature work.
 */
import { createVerifier } from 'fast-jwt';
import type { Config } from '../config/index.js';

export interface Claims {
  creator_id?: unknown;
  scope?: unknown;
  [claim: string]: unknown;
}

export type WidgetAuth = { ok: true; claims: Claims } | { ok: false; reason: string };
export type PublishAuth = 'ok' | 'unauthenticated' | 'forbidden';

export interface TokenVerifier {
  /** Verifies a widget token for `creatorId` (its `creator_id` claim must match). */
  verifyWidget(token: string, creatorId: string): WidgetAuth;
  /**
   * Verifies a service token for publishing to `creatorId` (or, with no
   * creatorId, to any connection): `scope` (a space-separated string or an
   * array) must contain `publish`; a token with a `creator_id` claim may only
   * publish to that creator.
   */
  verifyPublisher(token: string, creatorId: string | undefined): PublishAuth;
}

export function createTokenVerifier(jwt: Config['jwt']): TokenVerifier {
  const verify = createVerifier({
    key: jwt.key,
    algorithms: [...jwt.algorithms],
    clockTolerance: 5000,
    cache: 10_000,
  }) as (token: string) => Claims;

  function claimsOf(token: string): Claims | string {
    try {
      const c = verify(token);
      if (typeof c !== 'object' || c === null) return 'payload is not an object';
      return c;
    } catch (err) {
      return (err as { code?: string }).code ?? 'invalid token';
    }
  }

  return {
    verifyWidget(token, creatorId) {
      const c = claimsOf(token);
      if (typeof c === 'string') return { ok: false, reason: c };
      if (c.creator_id !== creatorId) return { ok: false, reason: 'creator_id claim does not match the path' };
      return { ok: true, claims: c };
    },
    verifyPublisher(token, creatorId) {
      const c = claimsOf(token);
      if (typeof c === 'string') return 'unauthenticated';
      const scope = c.scope;
      const scopes = typeof scope === 'string' ? scope.split(' ') : Array.isArray(scope) ? scope : [];
      if (!scopes.includes('publish')) return 'forbidden';
      if (c.creator_id !== undefined && c.creator_id !== creatorId) return 'forbidden';
      return 'ok';
    },
  };
}
