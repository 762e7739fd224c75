/**
 * WebSocket close codes sent by the gateway: a public table that tells a
 * client what happened and whether to reconnect. The README's close-code
 * table is checked against this one by a test.
 *
 * `reconnect`:
 *   - 'yes'      reconnect with jittered back-off (1-5 s, growing);
 *   - 'fix'      do not reconnect with the same parameters (new token, other
 *                session id, smaller frame) - reconnecting unchanged fails again;
 *   - 'no'       the close was the client's wish or final.
 */
export interface CloseCode {
  code: number;
  reason: string;
  reconnect: 'yes' | 'fix' | 'no';
  meaning: string;
}

function def<K extends string>(table: Record<K, CloseCode>): Readonly<Record<K, CloseCode>> {
  return Object.freeze(table);
}

export const CLOSE = def({
  NORMAL: { code: 1000, reason: 'Normal closure', reconnect: 'no', meaning: 'the client closed the socket' },
  SHUTDOWN: {
    code: 1001,
    reason: 'Server shutdown',
    reconnect: 'yes',
    meaning: 'the gateway process is stopping (SIGTERM/SIGINT); another worker or host takes the reconnect',
  },
  TRANSPORT: {
    code: 1006,
    reason: '',
    reconnect: 'yes',
    meaning: 'no close frame: network loss, a frame over 4x MAX_PAYLOAD_BYTES or invalid UTF-8 (uWS cuts the TCP connection)',
  },
  TOO_BIG: {
    code: 1009,
    reason: 'Message too big',
    reconnect: 'fix',
    meaning: 'a frame was larger than MAX_PAYLOAD_BYTES; do not resend it',
  },
  RESTART: {
    code: 1012,
    reason: 'Service Restart',
    reconnect: 'yes',
    meaning: 'rolling restart (SIGHUP): this worker is being replaced; reconnect at once, another worker answers',
  },
  INTERNAL: { code: 1011, reason: 'Internal error', reconnect: 'yes', meaning: 'an unexpected server fault on this socket only' },
  OVERLOADED: {
    code: 1013,
    reason: 'Try again later',
    reconnect: 'yes',
    meaning: 'the worker refuses new sockets: shutting down, or at MAX_CONNECTIONS (kept under its file-descriptor limit)',
  },
  AUTH_REQUIRED: {
    code: 4001,
    reason: 'Authentication token required',
    reconnect: 'fix',
    meaning: 'no token was given',
  },
  AUTH_INVALID: {
    code: 4003,
    reason: 'Invalid or unauthorized token',
    reconnect: 'fix',
    meaning: 'bad signature, expired or not yet valid, algorithm not allowed, creator_id differs from the path, or an invalid creator id',
  },
  BAD_REQUEST: {
    code: 4400,
    reason: 'Invalid session id',
    reconnect: 'fix',
    meaning: 'session_id is longer than 128 characters or has characters outside A-Z a-z 0-9 . _ : -',
  },
  TOO_MANY_CONNECTIONS: {
    code: 4029,
    reason: 'Too many connections',
    reconnect: 'yes',
    meaning: 'this client IP already holds MAX_CONNECTIONS_PER_IP sockets on the worker; reconnect with back-off after closing others',
  },
  CONNECT_RATE: {
    code: 4030,
    reason: 'Too many connection attempts',
    reconnect: 'yes',
    meaning: 'this client IP opened more than CONNECT_RATE_PER_IP sockets per second on the worker; reconnect with back-off',
  },
  FRAME_RATE: {
    code: 4008,
    reason: 'Frame rate exceeded',
    reconnect: 'yes',
    meaning: 'the client sent more than FRAME_RATE_LIMIT frames per second on this socket (an abuse cap, far above any chat); reconnect with back-off',
  },
  SLOW_CONSUMER: {
    code: 4009,
    reason: 'Slow consumer',
    reconnect: 'yes',
    meaning: 'the client read too slowly: more than MAX_BACKPRESSURE_BYTES were buffered for it; an answer would otherwise have been lost',
  },
});

export type CloseName = keyof typeof CLOSE;
