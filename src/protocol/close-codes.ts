/**
 * WebSocket close codes sent by the gateway: a public table that tells a
 * client what happened and what to do. The README's close-code table is
 * generated from this one (src/cli/readme.ts), and the browser SDK
 * (src/sdk/) derives its reconnect policy from `client`.
 *
 * `client`, what a well-behaved client does:
 *   - 'soon'     reconnect at once, spread over a short jitter (the server
 *                is moving the client: shutdown, rolling restart, network);
 *   - 'backoff'  reconnect with a growing, jittered back-off (the server is
 *                overloaded or the client was too fast);
 *   - 'token'    fetch a new token, then reconnect once with it;
 *   - 'stop'     do not reconnect with the same parameters (new token,
 *                other session id, smaller frame): report to the page;
 *   - 'none'     the close was the client's wish.
 */
export type ClientPolicy = 'soon' | 'backoff' | 'token' | 'stop' | 'none';

export interface CloseCode {
  code: number;
  reason: string;
  client: ClientPolicy;
  /** The README's advice, in words. */
  advice: string;
  meaning: string;
}

function def<K extends string>(table: Record<K, CloseCode>): Readonly<Record<K, CloseCode>> {
  for (const c of Object.values<CloseCode>(table)) Object.freeze(c);
  return Object.freeze(table);
}

export const CLOSE = def({
  NORMAL: { code: 1000, reason: 'Normal closure', client: 'none', advice: 'no', meaning: 'the client closed the socket' },
  SHUTDOWN: {
    code: 1001,
    reason: 'Server shutdown',
    client: 'soon',
    advice: 'yes, with jittered back-off',
    meaning: 'the gateway process is stopping (SIGTERM/SIGINT, or its primary died); another worker or host takes the reconnect',
  },
  TRANSPORT: {
    code: 1006,
    reason: '',
    client: 'soon',
    advice: 'yes',
    meaning: 'no close frame: network loss, a frame over 4x MAX_PAYLOAD_BYTES, or invalid UTF-8 in a text frame (uWS cuts the TCP connection)',
  },
  TOO_BIG: { code: 1009, reason: 'Message too big', client: 'stop', advice: 'not with the same frame', meaning: 'a frame was larger than MAX_PAYLOAD_BYTES' },
  INTERNAL: { code: 1011, reason: 'Internal error', client: 'backoff', advice: 'yes, with back-off', meaning: 'an unexpected fault while handling this socket\'s frame; only this socket is closed (logged as "socket handler failed")' },
  RESTART: {
    code: 1012,
    reason: 'Service Restart',
    client: 'soon',
    advice: 'yes, at once',
    meaning: 'rolling restart (SIGHUP): this worker is being replaced; its clients are closed over about 3 s and reconnect to the other workers',
  },
  OVERLOADED: {
    code: 1013,
    reason: 'Try again later',
    client: 'backoff',
    advice: 'yes, with back-off',
    meaning: 'the worker refuses new sockets: shutting down, or at MAX_CONNECTIONS (kept under its file-descriptor limit)',
  },
  AUTH_REQUIRED: {
    code: 4001,
    reason: 'Authentication token required',
    client: 'token',
    advice: 'with a token',
    meaning: 'no token was given',
  },
  TOKEN_EXPIRED: {
    code: 4001,
    reason: 'Token expired',
    client: 'token',
    advice: 'with a new token',
    meaning: 'widget.v2 only: the token has expired; fetch a fresh one and reconnect (widget.v1 clients get 4003, as before)',
  },
  AUTH_INVALID: {
    code: 4003,
    reason: 'Invalid or unauthorized token',
    client: 'stop',
    advice: 'not with the same token',
    meaning: 'bad signature, expired (widget.v1) or not yet valid, algorithm not allowed, creator_id differs from the path, origin not allowed, or an invalid creator id',
  },
  FRAME_RATE: {
    code: 4008,
    reason: 'Frame rate exceeded',
    client: 'backoff',
    advice: 'yes, with back-off',
    meaning: 'the client sent more than FRAME_RATE_LIMIT frames per second on the socket, or more than 32 before its connection_status (while a JWKS key or its session\'s budget was fetched, or its worker subscribed to its creator)',
  },
  SLOW_CONSUMER: {
    code: 4009,
    reason: 'Slow consumer',
    client: 'soon',
    advice: 'yes (widget.v2: resume, nothing is lost)',
    meaning: 'more than MAX_BACKPRESSURE_BYTES were buffered for the client; the socket is closed before anything could be lost',
  },
  TOO_MANY_CONNECTIONS: {
    code: 4029,
    reason: 'Too many connections',
    client: 'backoff',
    advice: 'yes, with back-off',
    meaning: 'the client IP already holds MAX_CONNECTIONS_PER_IP sockets on the worker',
  },
  CONNECT_RATE: {
    code: 4030,
    reason: 'Too many connection attempts',
    client: 'backoff',
    advice: 'yes, with back-off',
    meaning: 'the client IP opened more than CONNECT_RATE_PER_IP sockets per second on the worker',
  },
  BAD_REQUEST: {
    code: 4400,
    reason: 'Invalid session id',
    client: 'stop',
    advice: 'not with the same session id',
    meaning: '`session_id` over 128 characters or outside `A-Z a-z 0-9 . _ : -`',
  },
  BAD_RESUME: {
    code: 4400,
    reason: 'Invalid resume position',
    client: 'stop',
    advice: 'not with the same position',
    meaning: 'widget.v2: `resume_session` or `resume_broadcast` is not `EPOCH:OFFSET` (an epoch of 1-64 characters of `A-Z a-z 0-9 _ -`, an offset of at most 15 digits)',
  },
  BAD_REPLAY: {
    code: 4400,
    reason: 'Invalid replay mode',
    client: 'stop',
    advice: 'not with the same mode',
    meaning: 'widget.v2: `replay` is neither `frames` nor `batch`',
  },
});

export type CloseName = keyof typeof CLOSE;
