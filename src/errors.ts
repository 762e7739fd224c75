/**
 * Coded errors, in one registry (as fastify's FST_ERR_* and undici's UND_ERR_*).
 * Every code thrown by the gateway is listed in `ERROR_CODES` with what it
 * means; a test checks that the README documents each one.
 */
export const ERROR_CODES = {
  GW_ERR_CONFIG: 'a configuration variable is missing or invalid; start-up stops',
  GW_ERR_UWS_LOAD: 'no native uWebSockets.js binary could be loaded',
  GW_ERR_LISTEN: 'a worker could not listen on HOST:PORT',
  GW_ERR_AI_TIMEOUT: 'the AI engine did not answer within AI_ENGINE_TIMEOUT_MS (or a stream stalled past its deadline)',
  GW_ERR_AI_UNREACHABLE: 'the AI engine could not be reached, or the connection broke',
  GW_ERR_AI_HTTP_STATUS: 'the AI engine answered an HTTP status other than 2xx',
  GW_ERR_AI_BAD_ANSWER: 'the AI engine answered something that is not a valid answer (not JSON, wrong fields, garbage in a stream)',
  GW_ERR_AI_TOO_LARGE: 'the AI engine answered more than AI_ENGINE_MAX_RESPONSE_BYTES',
  GW_ERR_AI_SATURATED: 'too many AI requests in flight (per worker or per creator): refused at once; not counted against the engine',
  GW_ERR_AI_CIRCUIT_OPEN: 'the circuit breaker is open after AI_BREAKER_FAILURES consecutive failures: failing fast',
  GW_ERR_AI_CANCELLED: 'the client cancelled the answer',
  GW_ERR_IPC_TIMEOUT: 'a request to the primary or to a worker got no answer in time',
  GW_ERR_REDIS_TIMEOUT: 'a Redis command got no answer within REDIS_COMMAND_TIMEOUT_MS (the connection is then replaced)',
  GW_ERR_REDIS_UNAVAILABLE: 'Redis is not connected, or the command failed on the way',
  GW_ERR_OVERLOADED: 'refused at once rather than queued: REDIS_MAX_PENDING_BYTES already wait for Redis, or it is unreachable (the HTTP API answers 503)',
  GW_ERR_CLOSED: 'the component was used after close()',
  GW_ERR_CHANNEL: 'no handler is registered for a channel type',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** The AI engine's failure codes, and the bounded metric label of each. */
export const AI_FAILURES = {
  GW_ERR_AI_TIMEOUT: 'timeout',
  GW_ERR_AI_UNREACHABLE: 'unreachable',
  GW_ERR_AI_HTTP_STATUS: 'http_status',
  GW_ERR_AI_BAD_ANSWER: 'bad_answer',
  GW_ERR_AI_TOO_LARGE: 'too_large',
  GW_ERR_AI_SATURATED: 'saturated',
  GW_ERR_AI_CIRCUIT_OPEN: 'circuit_open',
  GW_ERR_AI_CANCELLED: 'cancelled',
} as const satisfies Partial<Record<ErrorCode, string>>;

/** The metric label of an AI failure, from its code ('error' for anything unexpected). */
export function aiFailureLabel(err: unknown): string {
  const code = err instanceof GatewayError ? err.code : undefined;
  return (code && (AI_FAILURES as Record<string, string>)[code]) ?? 'error';
}

export class GatewayError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'GatewayError';
  }
}
