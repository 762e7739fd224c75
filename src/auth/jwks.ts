/**
 * Public keys from a JWKS URL, selected by `kid`.
 *
 * - One fast-jwt verifier per key, so verification stays synchronous once a
 *   key is known (the common case: a socket never waits for a key).
 * - Refreshed every `refreshMs` (key rotation), and on an unknown `kid` -
 *   but at most once per `minRefreshMs`, so a flood of tokens with forged
 *   kids costs at most one JWKS request per interval, never one per token.
 * - A failed refresh keeps the keys already known.
 */
import { createPublicKey } from 'node:crypto';
import { createVerifier } from 'fast-jwt';
import { request } from 'undici';
import type { Logger } from '../observability/log.js';
import type { JwtAlgorithm } from '../config/index.js';

export type VerifyFn = (token: string) => Record<string, unknown>;

export interface JwksOptions {
  url: string;
  algorithms: readonly JwtAlgorithm[];
  refreshMs: number;
  minRefreshMs: number;
  /** Builds the verifier of one key (fast-jwt options: algorithms, iss, aud, clock). */
  makeVerifier: (pem: string) => VerifyFn;
  log: Logger;
}

interface Jwk {
  kid?: unknown;
  kty?: unknown;
  use?: unknown;
  [k: string]: unknown;
}

export class JwksKeys {
  #verifiers = new Map<string, VerifyFn>();
  #lastFetch = 0;
  #inflight: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** JWKS requests made (for tests and metrics). */
  fetches = 0;

  constructor(private readonly o: JwksOptions) {}

  /** Fetches the keys now and every refreshMs. */
  async start(): Promise<void> {
    await this.refresh(true);
    this.#timer = setInterval(() => void this.refresh(true), this.o.refreshMs);
    this.#timer.unref();
  }

  verifierFor(kid: string): VerifyFn | undefined {
    return this.#verifiers.get(kid);
  }

  /** Refetches the JWKS unless that was done less than minRefreshMs ago (then resolves at once). */
  refresh(force = false): Promise<void> {
    if (this.#inflight) return this.#inflight;
    if (!force && Date.now() - this.#lastFetch < this.o.minRefreshMs) return Promise.resolve();
    this.#lastFetch = Date.now();
    this.#inflight = this.#fetch().finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  async #fetch(): Promise<void> {
    this.fetches++;
    try {
      const res = await request(this.o.url, { method: 'GET', headersTimeout: 5000, bodyTimeout: 5000 });
      if (res.statusCode !== 200) {
        res.body.resume();
        throw new Error(`HTTP ${res.statusCode}`);
      }
      const body = (await res.body.json()) as { keys?: unknown };
      if (!Array.isArray(body.keys)) throw new Error('no "keys" array');
      const next = new Map<string, VerifyFn>();
      for (const jwk of body.keys as Jwk[]) {
        if (typeof jwk.kid !== 'string' || (jwk.use !== undefined && jwk.use !== 'sig')) continue;
        try {
          const pem = createPublicKey({ key: jwk as never, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString();
          next.set(jwk.kid, this.#verifiers.get(jwk.kid) ?? this.o.makeVerifier(pem));
        } catch (err) {
          this.o.log.warn({ kid: jwk.kid, err: (err as Error).message }, 'JWKS key skipped');
        }
      }
      this.#verifiers = next;
      this.o.log.debug({ keys: next.size }, 'JWKS refreshed');
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'JWKS refresh failed; keeping the keys already known');
    }
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer);
  }
}

/** Tokens kept by `byToken`: at most this many, of at most `KEPT_TOKEN_CHARS` characters. */
export const KEPT_TOKENS = 10_000;
export const KEPT_TOKEN_CHARS = 512;
/** A kept verification is used at most this long (fast-jwt's own cache TTL). A key that leaves the JWKS takes its kept tokens with it (its verifier is dropped). */
const KEPT_MS = 600_000;

/**
 * Successful verifications kept by the token itself, each until the token
 * expires or KEPT_MS pass, whichever is first. fast-jwt's own cache hashes
 * every token on every verify, hits included (a decode of its header, a hash
 * object and a SHA-256: 20-35 µs of CPU per connect in the connect storm,
 * measured), and warns
 * when given another key. Only successes are kept (a refusal is decided
 * again, by fast-jwt), only short tokens (a widget token is about 200
 * characters), and at most KEPT_TOKENS of them (the oldest go first).
 */
export function byToken(verify: VerifyFn, now: () => number = Date.now): VerifyFn {
  const kept = new Map<string, { claims: Record<string, unknown>; until: number }>();
  return (token) => {
    const t = now();
    const hit = kept.get(token);
    if (hit !== undefined) {
      if (t < hit.until) return hit.claims;
      kept.delete(token);
    }
    const claims = verify(token);
    if (token.length <= KEPT_TOKEN_CHARS) {
      const exp = claims.exp;
      const until = Math.min(t + KEPT_MS, typeof exp === 'number' ? exp * 1000 : Infinity);
      if (until > t) {
        if (kept.size >= KEPT_TOKENS) kept.delete(kept.keys().next().value!);
        kept.set(token, { claims, until });
      }
    }
    return claims;
  };
}

/** The fast-jwt verifier for one public key, with the gateway's rules. */
export function keyVerifier(pem: string, algorithms: readonly JwtAlgorithm[], iss?: string, aud?: string): VerifyFn {
  // fast-jwt's allowedIss/allowedAud only check a claim that is present: require them too.
  const requiredClaims = [...(iss ? ['iss'] : []), ...(aud ? ['aud'] : [])];
  const verify = createVerifier({
    requiredClaims,
    key: pem,
    algorithms: [...algorithms],
    clockTolerance: 5000,
    cache: 10_000,
    ...(iss ? { allowedIss: iss } : {}),
    ...(aud ? { allowedAud: aud } : {}),
  }) as VerifyFn;
  return byToken(verify);
}
