import { createSigner } from 'fast-jwt';

export const SECRET = 'test-secret-0123456789abcdef';

const sign = createSigner({ key: SECRET, algorithm: 'HS256', expiresIn: 3600_000 });

export function widgetToken(creatorId: string, extra: Record<string, unknown> = {}): string {
  return sign({ creator_id: creatorId, ...extra });
}

export function serviceToken(extra: Record<string, unknown> = {}): string {
  return sign({ scope: 'publish', ...extra });
}

/** A token signed with another key, or with the given options. */
export function signWith(key: string, payload: Record<string, unknown>, opts: Record<string, unknown> = {}): string {
  return createSigner({ key, algorithm: 'HS256', ...opts } as never)(payload);
}

/** An unsigned token (`alg: none`). */
export function unsignedToken(payload: Record<string, unknown>): string {
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64(payload)}.`;
}
