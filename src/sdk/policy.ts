/**
 * What the SDK does on each close code: the `client` column of the close-code
 * table (src/protocol/close-codes.ts), kept compact for the bundle. A test
 * (test/sdk.test.ts) checks that the two agree.
 *   s: soon (reconnect at once, spread over a short jitter)
 *   b: back off (growing, jittered)
 *   t: fetch a new token, then reconnect once with it
 *   x: stop and report
 *   n: the client's own wish
 * Codes not listed (1006 and any other): reconnect soon.
 */
export type Policy = 's' | 'b' | 't' | 'x' | 'n';

export const POLICY: Readonly<Record<number, Policy>> = {
  1000: 'n',
  1001: 's',
  1009: 'x',
  1011: 'b',
  1012: 's',
  1013: 'b',
  4001: 't',
  4003: 'x',
  4008: 'b',
  4009: 's',
  4029: 'b',
  4030: 'b',
  4400: 'x',
};

export function policyOf(code: number): Policy {
  return POLICY[code] ?? 's';
}

/**
 * Full-jitter exponential back-off (AWS's "full jitter"): a random delay in
 * [0, min(cap, base x 2^attempt)). `random` is injectable for tests.
 */
export function backoff(attempt: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  return Math.floor(random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30)));
}
