/**
 * The one table of environment variables: every variable the gateway reads
 * is a row here, with its default, its rule, its documentation and whether
 * it is a secret. `loadConfig` (index.ts) reads nothing else, and the
 * README's configuration table is generated from this one (src/cli/readme.ts;
 * a test checks that they agree).
 *
 * A parser gets the variable's name and its raw text (the default when the
 * variable is unset or empty; '' when it has none) and returns the value or
 * throws a ConfigError naming the variable. Errors about a secret never echo
 * its value, even a malformed one.
 */
import os from 'node:os';
import { readFileSync } from 'node:fs';
import { GatewayError } from '../errors.js';
import { isIP } from 'node:net';

export class ConfigError extends GatewayError {
  constructor(
    readonly variable: string,
    rule: string,
    got: string | undefined,
  ) {
    super('GW_ERR_CONFIG', `${variable} ${rule}${got === undefined || SECRET.has(variable) ? '' : ` (got ${JSON.stringify(got)})`}`);
    this.name = 'ConfigError';
  }
}

/** README sections of the configuration table, in order. */
export const GROUPS = {
  listen: 'Listening',
  cluster: 'Cluster and Redis',
  auth: 'Authentication',
  door: 'Connections and abuse limits',
  limits: 'Rate limits',
  ai: 'AI engine',
  history: 'History and resume (widget.v2)',
  validation: 'Validation',
  channels: 'Channels',
  ops: 'Operations',
} as const;
export type Group = keyof typeof GROUPS;

export interface Variable<T> {
  group: Group;
  /** Raw default ('' = unset). */
  def: string;
  /** What the README shows as the default, when not `def` itself. */
  shown?: string;
  doc: string;
  secret?: true;
  parse(name: string, raw: string): T;
}

// ---- parsers

export function int(name: string, raw: string, min: number, max: number): number {
  const n = Number(raw);
  if (!/^-?\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(name, `must be an integer from ${min} to ${max}`, raw);
  }
  return n;
}

export function url(name: string, raw: string, protocols: readonly string[]): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new ConfigError(name, `must be a URL (${protocols.join(', ')})`, raw);
  }
  if (!protocols.includes(u.protocol)) throw new ConfigError(name, `must use ${protocols.join(' or ')}`, raw);
  return raw;
}

function intVar(group: Group, def: string, doc: string, min: number, max: number, shown?: string): Variable<number> {
  return { group, def, doc, ...(shown ? { shown } : {}), parse: (n, v) => int(n, v, min, max) };
}

function optUrl(group: Group, doc: string, protocols: readonly string[], secret = false): Variable<string | undefined> {
  return { group, def: '', doc, ...(secret ? { secret: true as const } : {}), parse: (n, v) => (v === '' ? undefined : url(n, v, protocols)) };
}

/** Free text; '' when unset. */
function text(group: Group, doc: string, opts: { secret?: true; shown?: string } = {}): Variable<string> {
  return { group, def: '', doc, ...opts, parse: (_n, v) => v };
}

function oneOf<T extends string>(group: Group, def: T, doc: string, values: readonly T[]): Variable<T> {
  return {
    group,
    def,
    doc,
    parse: (n, v) => {
      if (!(values as readonly string[]).includes(v)) throw new ConfigError(n, `must be one of ${values.join(', ')}`, v);
      return v as T;
    },
  };
}

/** uWS aborts the whole process on an idleTimeout of 1-7 or over 960. */
function idleTimeout(name: string, raw: string): number {
  const n = int(name, raw, 0, 960);
  if (n !== 0 && n < 8) throw new ConfigError(name, 'must be 0 (disabled) or from 8 to 960 seconds', raw);
  return n;
}

/** The soft RLIMIT_NOFILE of this process (from /proc), or undefined. */
export function fileDescriptorLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Descriptors kept free for the listen socket, Redis, the AI engine, logs and files. */
export const FD_RESERVE = 256;

function maxConnections(name: string, raw: string): number {
  const fdLimit = fileDescriptorLimit();
  const ceiling = fdLimit === undefined ? 1_000_000 : Math.max(1, fdLimit - FD_RESERVE);
  if (raw === '') return ceiling;
  const n = int(name, raw, 1, 10_000_000);
  if (n > ceiling) throw new ConfigError(name, `must stay under the file-descriptor limit (${fdLimit}) minus ${FD_RESERVE}, i.e. at most ${ceiling}`, raw);
  return n;
}

function origins(name: string, raw: string): readonly string[] | undefined {
  if (raw === '' || raw === '*') return undefined;
  const list = raw.split(',').map((o) => o.trim()).filter(Boolean);
  for (const o of list) {
    let u: URL | undefined;
    try {
      u = new URL(o);
    } catch {
      /* refused below */
    }
    if (!u || u.origin !== o) throw new ConfigError(name, 'must list origins like https://shop.example.com (scheme://host[:port], no path)', raw);
  }
  return Object.freeze(list);
}

/** A TRUSTED_PROXIES entry: an IP address or a CIDR range. */
export function validProxyEntry(e: string): boolean {
  const [addr, bits, extra] = e.split('/');
  const v = isIP(addr ?? '');
  if (v === 0 || extra !== undefined) return false;
  if (bits === undefined) return true;
  const n = Number(bits);
  return /^\d{1,3}$/.test(bits) && n >= 0 && n <= (v === 6 ? 128 : 32);
}

/** `host:port,...`; [] when unset. */
function hostPorts(name: string, raw: string): ReadonlyArray<{ host: string; port: number }> {
  if (raw.trim() === '') return [];
  return Object.freeze(
    raw.split(',').map((e) => {
      const m = /^\s*([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})\s*$/.exec(e);
      if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new ConfigError(name, 'must be a comma-separated list of host:port', raw);
      return { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]) };
    }),
  );
}

function list(name: string, raw: string, check: (item: string) => boolean, rule: string): readonly string[] {
  const items = raw.split(',').map((s) => s.trim()).filter(Boolean);
  for (const i of items) if (!check(i)) throw new ConfigError(name, rule, raw);
  return Object.freeze(items);
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/**
 * The table: environment variable -> how it is read. Rows are grouped as
 * the README shows them.
 */
export const VARIABLES = {
  // ---- listening
  PORT: intVar('listen', '9001', 'listen port (every worker binds it; SO_REUSEPORT spreads connections)', 0, 65535),
  HOST: {
    group: 'listen',
    def: '0.0.0.0',
    doc: 'listen address',
    parse: (n: string, v: string) => {
      if (!/^[A-Za-z0-9.:\-[\]]+$/.test(v)) throw new ConfigError(n, 'must be an IP address or host name', v);
      return v;
    },
  },
  WORKERS: {
    group: 'listen',
    def: String(os.availableParallelism()),
    shown: 'CPU count',
    doc: 'uWS worker processes',
    parse: (n: string, v: string) => {
      if (!/^\d+$/.test(v.trim()) || Number(v) < 1 || Number(v) > 256) throw new ConfigError(n, 'must be a positive integer (at most 256)', v);
      return Number(v);
    },
  },
  WORKER_SEMI_SPACE_MB: intVar(
    'listen',
    '4',
    "each worker's V8 young-generation semi-space, at most (`--max-semi-space-size`; 0: V8's default, 16 on this Node). A connect storm's garbage touches every page of it and they stay resident, so V8's default costs each worker about 30 MB of RSS for good; a flag of the same name in NODE_OPTIONS or on the primary's command line wins",
    0,
    256,
  ),
  WORKER_GC: oneOf(
    'listen',
    'single',
    "how each worker's V8 garbage collector runs: `single` (`--single-threaded-gc`) collects on the worker's own thread; `parallel` is V8's default, which adds helper threads to every collection. With a worker per core the helpers only compete with the event loops, and a young-generation collection that waits for them stalls every socket of its worker (see \"Garbage collection\" in the README). A GC-threading flag in NODE_OPTIONS or on the primary's command line wins",
    ['single', 'parallel'] as const,
  ),
  ADMIN_PORT: {
    group: 'listen',
    def: '',
    doc: 'the internal listener: with it set, `/metrics` and `/api/v1/stats` are served on `ADMIN_HOST:ADMIN_PORT` only (plus `/healthz`, `/readyz`), and the widget port keeps `/healthz` and `/readyz` for the balancer; unset, they stay on the widget port (development; production start-up warns)',
    parse: (n: string, v: string) => (v === '' ? undefined : int(n, v, 1, 65535)),
  },
  ADMIN_HOST: {
    group: 'listen',
    def: '127.0.0.1',
    doc: 'address of the internal listener (loopback: only this host, e.g. a local Prometheus agent, reaches it)',
    parse: (n: string, v: string) => {
      if (!/^[A-Za-z0-9.:\-[\]]+$/.test(v)) throw new ConfigError(n, 'must be an IP address or host name', v);
      return v;
    },
  },
  TLS_CERT_FILE: text('listen', 'PEM certificate (chain): with `TLS_KEY_FILE`, uWS serves wss:// and https:// itself (SSLApp)'),
  TLS_KEY_FILE: text('listen', 'PEM private key for `TLS_CERT_FILE`'),

  // ---- cluster and Redis
  REDIS_URL: optUrl('cluster', 'unset (and no `REDIS_CLUSTER_NODES` or `REDIS_SENTINELS`): embedded mode, workers bridged through the primary; `redis://` or `rediss://` for the Redis bus on one server (a password in it is never logged)', ['redis:', 'rediss:'], true),
  REDIS_CLUSTER_NODES: {
    group: 'cluster',
    def: '',
    doc: 'a Redis Cluster instead: `host:port,host:port,...` (some of its nodes; the rest are discovered). Pub/sub is sharded (SPUBLISH/SSUBSCRIBE, Redis 7), every script touches one slot',
    parse: (n: string, v: string) => hostPorts(n, v),
  },
  REDIS_SENTINELS: {
    group: 'cluster',
    def: '',
    doc: 'a primary with replicas behind Redis Sentinel instead: `host:port,...` of the sentinels; the gateway follows a failover to the promoted replica',
    parse: (n: string, v: string) => hostPorts(n, v),
  },
  REDIS_SENTINEL_NAME: {
    group: 'cluster',
    def: 'mymaster',
    doc: 'the primary\'s name as the sentinels know it',
    parse: (n: string, v: string) => {
      if (!/^[A-Za-z0-9._-]{1,64}$/.test(v)) throw new ConfigError(n, 'must be 1-64 characters of A-Z a-z 0-9 . _ -', v);
      return v;
    },
  },
  // ---- channels
  TELEGRAM_BOTS: text('channels', 'Telegram bots per creator, as JSON: `{"<creator_id>": {"token": "<bot token>", "secret": "<webhook secret token>"}}` (the secret: 1-256 of A-Z a-z 0-9 _ -, as given to setWebhook). Unset (and no file): no Telegram channel. Tokens are never logged', { secret: true }),
  TELEGRAM_BOTS_FILE: text('channels', 'reads `TELEGRAM_BOTS` from this file instead (keep it readable by the gateway only)'),
  TELEGRAM_API_URL: { ...optUrl('channels', 'the Bot API', ['https:', 'http:']), def: 'https://api.telegram.org' },
  TELEGRAM_CHAT_INTERVAL_MS: intVar('channels', '1000', 'least time between two messages to one chat (Telegram allows about one per second)', 0, 60_000),
  TELEGRAM_MAX_PER_S: intVar('channels', '30', 'messages per second per bot, for the whole host: each worker sends at most its share (this / WORKERS); Telegram allows about 30', 1, 10_000),
  TELEGRAM_MAX_QUEUE: intVar('channels', '10000', 'calls waiting per bot per worker; beyond it a call is refused, counted (`gateway_telegram_calls_total{outcome="overflow"}`) and logged', 1, 10_000_000),
  REDIS_PASSWORD: text('cluster', 'password of the cluster nodes or of the sentinel-managed primary (`REDIS_URL` carries its own)', { secret: true }),
  REDIS_PREFIX: {
    group: 'cluster',
    def: 'cgw:',
    doc: 'prefix of every Redis key and channel, so several gateways can share one Redis',
    parse: (n: string, v: string) => {
      if (!/^[A-Za-z0-9:_.-]{1,64}$/.test(v)) throw new ConfigError(n, 'must be 1-64 characters of A-Z a-z 0-9 : _ . -', v);
      return v;
    },
  },
  REDIS_COMMAND_TIMEOUT_MS: intVar('cluster', '2000', 'deadline of every Redis command; a connection that answers nothing for this long (DEBUG SLEEP, a paused or unreachable server) is dropped and reconnected, failing what waited on it', 100, 60_000),
  REDIS_MAX_PENDING_BYTES: intVar('cluster', '67108864', 'bytes of publishes and appends that may wait for Redis\'s answer per worker; beyond it they are refused (HTTP 503) and counted, never queued without bound', 65_536, 4 * 1024 * 1024 * 1024),
  REGISTRY_LEASE_S: intVar('cluster', '15', "node lease; a host that dies without cleaning up leaves the registry within 4/3 of this (20 s by default)", 1, 3600),

  // ---- authentication
  JWT_SECRET: text('auth', 'HS256 (or JWT_ALGORITHMS\' HS*) shared secret, at least 16 characters', { secret: true }),
  GATEWAY_DEV_SECRET: text('auth', 'internal: `1` when `JWT_SECRET` is the development secret the primary generated (it sets this for its workers); do not set it yourself'),
  JWT_PUBLIC_KEY: text('auth', 'PEM public key (RS256/PS256/ES256/EdDSA, from the key type); `\\n` escapes allowed'),
  JWT_PUBLIC_KEY_FILE: text('auth', 'reads `JWT_PUBLIC_KEY` from this file'),
  JWT_ALGORITHMS: {
    group: 'auth',
    def: '',
    shown: 'from the key',
    doc: 'comma-separated allowed algorithms; `none` is never allowed, nor HS* with a public key',
    parse: (_n: string, v: string) => v.split(',').map((a) => a.trim()).filter(Boolean),
  },
  JWT_JWKS_URL: optUrl('auth', 'keys from a JWKS URL instead, chosen by the token\'s `kid`; asymmetric algorithms only', ['https:', 'http:']),
  JWT_JWKS_REFRESH_S: intVar('auth', '600', 'JWKS refresh period (key rotation)', 10, 86_400),
  JWT_JWKS_MIN_REFRESH_S: intVar('auth', '30', 'an unknown `kid` triggers a refresh at most this often, so forged kids cannot make the gateway hammer the JWKS server', 1, 3600),
  JWT_ISSUER: text('auth', 'required `iss` claim'),
  JWT_AUDIENCE: text('auth', 'required `aud` claim'),
  TRUSTED_PROXIES: {
    group: 'door',
    def: '',
    shown: 'unset (none)',
    doc: 'comma-separated addresses or CIDR ranges of load balancers whose word on the client address is taken: the PROXY protocol v2 header (HAProxy `send-proxy-v2`) or, for HTTP balancers, X-Forwarded-For. The per-IP limits and the logs then see each client\'s own address; any other peer is its TCP address, whatever it sends',
    parse: (n: string, v: string) => list(n, v, validProxyEntry, 'must list IP addresses or CIDR ranges (10.0.0.0/8, ::1)'),
  },
  ALLOWED_ORIGINS: {
    group: 'auth',
    def: '',
    shown: 'unset (any)',
    doc: 'comma-separated origins (`https://shop.example.com`) allowed to open widget sockets, against cross-site WebSocket hijacking; a mismatch closes with 4003. A token\'s own `origins` claim (string or array) narrows it further. Clients that send no Origin (non-browsers) pass the list but not an `origins` claim',
    parse: origins,
  },

  // ---- connections and abuse limits
  MAX_CONNECTIONS: {
    group: 'door',
    def: '',
    shown: 'fd limit - 256',
    doc: 'open sockets per worker; above it new sockets get 1013, so the worker never runs out of file descriptors (EMFILE). Refused at start-up if set above the descriptor limit',
    parse: maxConnections,
  },
  MAX_CONNECTIONS_PER_IP: intVar('door', '0', 'open sockets per client IP per worker; the excess gets 4029; 0: off', 0, 10_000_000, '0 (off)'),
  FRAME_RATE_LIMIT: intVar('door', '100', 'frames per second per socket (burst as large), an abuse cap far above any chat; over it the socket is closed with 4008; 0: off', 0, 1_000_000),
  CONNECT_RATE_PER_IP: intVar('door', '50', 'new sockets per client IP per second per worker (burst as large); over it 4030; 0: off', 0, 1_000_000),
  MAX_HEADER_BYTES: intVar('door', '8192', "total size of the upgrade request's headers the gateway reads (Sec-WebSocket-Key, -Protocol and -Extensions, Origin); larger requests get HTTP 431. Other headers are never copied out of uWS's buffer and do not count", 512, 1_048_576),
  IDLE_TIMEOUT_S: { group: 'door', def: '120', doc: 'uWS idleTimeout; 0 or 8-960 (uWS aborts the process on other values, so they are refused here); the server pings automatically', parse: idleTimeout },
  MAX_PAYLOAD_BYTES: intVar('door', '65536', 'larger client frames close the socket with 1009; also the broadcast body limit (413)', 256, 16 * 1024 * 1024),
  MAX_BACKPRESSURE_BYTES: intVar('door', '1048576', 'bytes buffered for one slow socket before it is closed (4009)', 1024, 256 * 1024 * 1024),
  MAX_QUEUED_MESSAGES: intVar('door', '16', 'user messages waiting for an answer per connection; the excess gets an error frame', 1, 10_000),
  MAX_MESSAGE_CHARS: intVar('door', '16000', 'longest `content` of a user_message, in characters after trimming; longer ones are answered `Message too long` (the socket stays open). Frames are bounded separately by `MAX_PAYLOAD_BYTES`', 1, 16 * 1024 * 1024),

  // ---- rate limits
  RATE_LIMIT_MESSAGES: intVar('limits', '20', 'user messages per session (creator + session id) per window, across every worker and host (see "Rate limits"); reconnecting does not reset it; 0: off', 0, 1_000_000),
  RATE_LIMIT_WINDOW_S: intVar('limits', '10', 'the window of `RATE_LIMIT_MESSAGES`', 1, 86_400),
  AI_BUDGET_PER_MINUTE: intVar('limits', '0', 'AI requests per creator per minute, across every worker and host (burst as large); over it a message is answered `AI request budget exceeded, try again later`; 0: off', 0, 100_000_000, '0 (off)'),
  RATE_LIMIT_SYNC_MS: intVar('limits', '100', 'how often each worker reports its takes on session and creator budgets to the store (the primary, or Redis) and learns the others\'; bounds the overshoot (see "Rate limits")', 10, 10_000),

  // ---- AI engine
  AI_ENGINE_URL: optUrl('ai', 'unset: embedded echo engine. Else `POST` `{query, creator_id, session_id}`, expecting `{response, confidence, sources}`', ['http:', 'https:']),
  AI_ENGINE_TIMEOUT_MS: intVar('ai', '30000', 'deadline of a whole answer, streamed or not', 1, 600_000),
  AI_ENGINE_FIRST_PIECE_TIMEOUT_MS: intVar('ai', '10000', 'deadline of the response headers and, for a streamed answer, of its first piece', 1, 600_000),
  AI_ENGINE_IDLE_TIMEOUT_MS: intVar('ai', '10000', 'longest gap between two pieces of a streamed answer', 1, 600_000),
  AI_ENGINE_MAX_RESPONSE_BYTES: intVar('ai', '1048576', 'most bytes read from one engine answer; a larger answer is cut and answered `Failed to process message` (counted as `too_large`)', 1024, 1024 * 1024 * 1024),
  AI_ECHO_DELAY_MS: intVar('ai', '0', 'the embedded echo engine (no `AI_ENGINE_URL`) streams its answer word by word with this pause between words; `make run` sets 40 so streaming shows', 0, 10_000),
  AI_ENGINE_MAX_INFLIGHT: intVar('ai', '1024', 'AI requests in flight per worker; the excess is answered `Failed to process message` at once', 1, 1_000_000),
  AI_ENGINE_CONNECTIONS: intVar('ai', '512', 'keep-alive connections to the engine per worker; with an engine answering in T s, one worker has at most this many answers in progress (512 / 0.2 s = 2,560 answers/s per worker); more requests wait in the pool\'s queue, within their time-out', 1, 65_536),
  AI_ENGINE_MAX_INFLIGHT_PER_CREATOR: intVar('ai', '256', 'AI requests in flight per creator per worker, so one creator\'s burst cannot take every slot; the excess is answered `Failed to process message`', 1, 1_000_000),
  AI_BREAKER_FAILURES: intVar('ai', '20', 'consecutive engine failures (errors, time-outs, garbage) that open the circuit breaker: then requests fail at once instead of hammering a dead engine', 1, 100_000),
  AI_BREAKER_COOLDOWN_MS: intVar('ai', '5000', 'how long the circuit stays open; then one probe request decides (success closes it)', 100, 600_000),

  // ---- history (widget.v2)
  HISTORY_SIZE: intVar('history', '100', 'frames kept per stream (a session\'s, and a creator\'s broadcasts) for widget.v2 clients to resume; 0: history off, and the server does not offer widget.v2', 0, 100_000),
  HISTORY_TTL_S: intVar('history', '300', 'a stream nobody follows is forgotten this long after its last frame (a later resume gets `continuity_lost`); claimed `client_message_id`s are kept as long', 10, 7 * 86_400),
  HISTORY_MAX_BYTES: intVar('history', '268435456', 'embedded mode: the most bytes of history the primary keeps in all; beyond it whole streams go, least recently used first (their readers get `continuity_lost`). In Redis mode, bound Redis\'s memory instead', 1 << 20, 64 * 1024 * 1024 * 1024),
  HISTORY_CHECK_S: intVar('history', '5', 'Redis mode: how often a node compares the streams it follows with their top in Redis, fills a gap left by a lost pub/sub message, and keeps followed streams from expiring', 1, 3600),

  // ---- validation
  VALIDATION_MODE: oneOf('validation', 'auto', '`inline`: frames decoded on the uWS thread; `pool`: in a piscina thread pool; `auto`: frames of at least `VALIDATION_POOL_THRESHOLD_BYTES` in the pool, the rest inline. Answers keep their order per connection whichever path a frame took (see "Validation" in bench/RESULTS.md for why auto is the default)', ['inline', 'pool', 'auto'] as const),
  VALIDATION_POOL_THRESHOLD_BYTES: intVar('validation', '32768', 'the `auto` threshold', 1, 16 * 1024 * 1024),
  VALIDATION_THREADS: intVar('validation', '1', 'pool threads per worker', 1, 64),
  VALIDATION_MAX_QUEUE: intVar('validation', '1024', 'frames waiting for the pool per worker; beyond it a frame is answered `Server busy, try again` instead of piling up', 1, 1_000_000),

  // ---- browser
  DEMO_PAGE: {
    group: 'listen',
    def: '',
    shown: 'on, off with NODE_ENV=production',
    doc: '`on` / `off`: `GET /demo`, a chat page using the SDK; with no JWT key configured it gets its token from `GET /demo/token`, which signs with the generated development secret and never exists in production',
    parse: (n: string, v: string) => {
      if (v !== '' && v !== 'on' && v !== 'off') throw new ConfigError(n, 'must be on or off', v);
      return v;
    },
  },

  // ---- operations
  NODE_ENV: text('ops', '`production`: a missing JWT key stops start-up, and the development-only routes never exist'),
  GATEWAY_ENV_FILE: text('ops', 'an environment file (KEY=VALUE) the primary re-reads on SIGHUP before a rolling restart; the systemd unit sets it'),
  SHUTDOWN_TIMEOUT_S: intVar('ops', '30', 'graceful shutdown deadline; a watchdog forces the exit after it', 1, 3600),
  LOG_LEVEL: oneOf('ops', 'info', 'pino level', LOG_LEVELS),
} satisfies Record<string, Variable<unknown>>;

export type VariableName = keyof typeof VARIABLES;

/** Variables whose values are never echoed in an error. */
const SECRET: ReadonlySet<string> = new Set(
  Object.entries(VARIABLES as Record<string, Variable<unknown>>).filter(([, v]) => v.secret).map(([k]) => k),
);

export function isSecret(name: string): boolean {
  return SECRET.has(name);
}

/** Reads one variable of the table from `env` (its default when unset or empty). */
export function read<K extends VariableName>(env: Readonly<Record<string, string | undefined>>, name: K): ReturnType<(typeof VARIABLES)[K]['parse']> {
  const spec = VARIABLES[name] as Variable<unknown>;
  const raw = env[name];
  return spec.parse(name, raw === undefined || raw === '' ? spec.def : raw) as ReturnType<(typeof VARIABLES)[K]['parse']>;
}

