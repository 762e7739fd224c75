/**
 * Coded errors, in one registry (as fastify's FST_ERR_* and undici's UND_ERR_*).
 * Every code thrown by the gateway is listed in `ERROR_CODES` with what it
 * means; a test checks that the README documents each one.
 */
export const ERROR_CODES = {
  GW_ERR_CONFIG: 'a configuration variable is missing or invalid; start-up stops',
  GW_ERR_UWS_LOAD: 'no native uWebSockets.js binary could be loaded',
  GW_ERR_LISTEN: 'a worker could not listen on HOST:PORT',
  GW_ERR_AI_ENGINE: 'the AI engine failed, timed out, answered garbage or is saturated',
  GW_ERR_IPC_TIMEOUT: 'a request to the primary or to a worker got no answer in time',
  GW_ERR_REDIS_TIMEOUT: 'a Redis command got no answer within REDIS_COMMAND_TIMEOUT_MS (the connection is then replaced)',
  GW_ERR_REDIS_UNAVAILABLE: 'Redis is not connected, or the command failed on the way',
  GW_ERR_OVERLOADED: 'refused at once rather than queued: REDIS_MAX_PENDING_BYTES already wait for Redis, or it is unreachable (the HTTP API answers 503)',
  GW_ERR_CLOSED: 'the component was used after close()',
  GW_ERR_CHANNEL: 'no handler is registered for a channel type',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

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
