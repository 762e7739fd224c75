/**
 * The one typed configuration of the gateway.
 *
 * Read once from the environment through the explicit table `VARIABLES`
 * (env name -> key, parser, default), validated, then frozen. A bad value
 * throws a `ConfigError` whose message names the variable and the rule, e.g.
 * `WORKERS must be a positive integer (got "abc")`; `main.ts` prints it and
 * exits 1 before anything listens.
 */
import { createPublicKey, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConfigError, read, type LogLevel } from './variables.js';
import type { RedisTarget } from '../redis/client.js';
import { isValidId } from '../auth/ids.js';

export { ConfigError, VARIABLES, FD_RESERVE, fileDescriptorLimit, type LogLevel } from './variables.js';

export type JwtAlgorithm =
  | 'HS256' | 'HS384' | 'HS512'
  | 'RS256' | 'RS384' | 'RS512'
  | 'PS256' | 'PS384' | 'PS512'
  | 'ES256' | 'ES384' | 'ES512'
  | 'EdDSA';

const HMAC_ALGS: readonly JwtAlgorithm[] = ['HS256', 'HS384', 'HS512'];
const ASYMMETRIC_ALGS: readonly JwtAlgorithm[] = [
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA',
];

type Env = Readonly<Record<string, string | undefined>>;

export interface Config {
  port: number;
  host: string;
  /** NODE_ENV=production. */
  production: boolean;
  /** GET /demo (and, outside production, /demo/token). */
  demoPage: boolean;
  /** The internal listener for stats and metrics; undefined: they are on the widget port. */
  admin: { port: number; host: string } | undefined;
  workers: number;
  /** WORKER_SEMI_SPACE_MB: the workers' --max-semi-space-size (0: V8's default, or NODE_OPTIONS sets it). */
  workerSemiSpaceMb: number;
  /** WORKER_GC: 'single' adds --single-threaded-gc to the workers' flags; 'parallel' adds nothing (V8's default, or NODE_OPTIONS chooses the GC's threads). */
  workerGc: 'single' | 'parallel';
  /** The Telegram channel (channels/telegram/), when bots are configured. */
  telegram: TelegramConfig | undefined;
  /** Where Redis is (redis/client.ts); undefined: embedded mode. */
  redis: RedisTarget | undefined;
  redisPrefix: string;
  redisCommandTimeoutMs: number;
  redisMaxPendingBytes: number;
  registryLeaseS: number;
  jwt: {
    /** HS* shared secret or PEM public key ('' with a JWKS URL). */
    key: string;
    algorithms: readonly JwtAlgorithm[];
    /** True when the key was generated because none was configured. */
    generated: boolean;
    /** Keys come from this JWKS URL, selected by `kid`. */
    jwksUrl?: string;
    jwksRefreshS: number;
    jwksMinRefreshS: number;
    /** Required `iss` / `aud` claims, when set. */
    issuer?: string;
    audience?: string;
  };
  /** Origins allowed to open widget sockets (exact match); undefined: any. */
  allowedOrigins: readonly string[] | undefined;
  /** Balancers whose PROXY header or X-Forwarded-For names the client. */
  trustedProxies: readonly string[];
  /** Open sockets per client IP per worker; 0: no limit. */
  maxConnectionsPerIp: number;
  /** Open sockets per worker, kept under the process's file-descriptor limit. */
  maxConnections: number;
  /** Total size of an upgrade request's headers. */
  maxHeaderBytes: number;
  aiEngineUrl: string | undefined;
  aiEngineTimeoutMs: number;
  aiEngineFirstPieceTimeoutMs: number;
  aiEngineIdleTimeoutMs: number;
  aiEngineMaxResponseBytes: number;
  aiEchoDelayMs: number;
  aiEngineMaxInflight: number;
  aiEngineConnections: number;
  aiEngineMaxInflightPerCreator: number;
  aiBreakerFailures: number;
  aiBreakerCooldownMs: number;
  rateLimitMessages: number;
  rateLimitWindowS: number;
  /** AI requests per creator per minute, across the cluster; 0: off. */
  aiBudgetPerMinute: number;
  /** How often session and creator budgets are reconciled across workers and hosts. */
  rateLimitSyncMs: number;
  idleTimeoutS: number;
  maxPayloadBytes: number;
  maxBackpressureBytes: number;
  maxQueuedMessages: number;
  /** Longest user_message content, in characters after trimming. */
  maxMessageChars: number;
  frameRateLimit: number;
  connectRatePerIp: number;
  /** Stream history for widget.v2 (size 0: off). */
  history: { size: number; ttlMs: number; maxBytes: number; checkMs: number };
  validationMode: 'inline' | 'pool' | 'auto';
  validationThresholdBytes: number;
  validationThreads: number;
  validationMaxQueue: number;
  shutdownTimeoutS: number;
  logLevel: LogLevel;
  /** Serve wss:// and https:// from uWS (SSLApp) when set. */
  tls: { certFile: string; keyFile: string } | undefined;
}

function readTls(env: Env): Config['tls'] {
  const certFile = read(env, 'TLS_CERT_FILE');
  const keyFile = read(env, 'TLS_KEY_FILE');
  if (certFile === '' && keyFile === '') return undefined;
  if (certFile === '') throw new ConfigError('TLS_CERT_FILE', 'must be set together with TLS_KEY_FILE', undefined);
  if (keyFile === '') throw new ConfigError('TLS_KEY_FILE', 'must be set together with TLS_CERT_FILE', undefined);
  for (const [name, file, marker] of [
    ['TLS_CERT_FILE', certFile, 'CERTIFICATE'],
    ['TLS_KEY_FILE', keyFile, 'PRIVATE KEY'],
  ] as const) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(name, `must name a readable PEM file: ${(err as Error).message}`, file);
    }
    if (!text.includes(marker)) throw new ConfigError(name, `must be a PEM file holding a ${marker}`, file);
  }
  return Object.freeze({ certFile, keyFile });
}

function readJwt(env: Env): Config['jwt'] {
  const issuer = read(env, 'JWT_ISSUER');
  const audience = read(env, 'JWT_AUDIENCE');
  const common = {
    jwksRefreshS: read(env, 'JWT_JWKS_REFRESH_S'),
    jwksMinRefreshS: read(env, 'JWT_JWKS_MIN_REFRESH_S'),
    ...(issuer ? { issuer } : {}),
    ...(audience ? { audience } : {}),
  };
  const jwksUrl = read(env, 'JWT_JWKS_URL');
  if (jwksUrl !== undefined) {
    if (read(env, 'JWT_SECRET') || read(env, 'JWT_PUBLIC_KEY') || read(env, 'JWT_PUBLIC_KEY_FILE')) {
      throw new ConfigError('JWT_JWKS_URL', 'must not be set together with JWT_SECRET / JWT_PUBLIC_KEY', undefined);
    }
    const given = read(env, 'JWT_ALGORITHMS');
    const algs = given.length === 0 ? ['RS256', 'PS256', 'ES256', 'EdDSA'] : given;
    for (const a of algs) {
      if (!(ASYMMETRIC_ALGS as readonly string[]).includes(a)) {
        throw new ConfigError('JWT_ALGORITHMS', `must list only ${ASYMMETRIC_ALGS.join(', ')} with a JWKS URL`, given.join(','));
      }
    }
    return Object.freeze({ key: '', algorithms: Object.freeze(algs as JwtAlgorithm[]), generated: false, jwksUrl, ...common });
  }
  return Object.freeze({ ...readStaticJwt(env), ...common });
}

function readStaticJwt(env: Env): Pick<Config['jwt'], 'key' | 'algorithms' | 'generated'> {
  const secret = read(env, 'JWT_SECRET');
  let publicKey = read(env, 'JWT_PUBLIC_KEY');
  const keyFile = read(env, 'JWT_PUBLIC_KEY_FILE');
  if (secret !== '' && (publicKey !== '' || keyFile !== '')) {
    throw new ConfigError('JWT_SECRET', 'must not be set together with JWT_PUBLIC_KEY / JWT_PUBLIC_KEY_FILE', undefined);
  }
  if (keyFile !== '') {
    if (publicKey !== '') throw new ConfigError('JWT_PUBLIC_KEY_FILE', 'must not be set together with JWT_PUBLIC_KEY', undefined);
    try {
      publicKey = readFileSync(keyFile, 'utf8');
    } catch (err) {
      throw new ConfigError('JWT_PUBLIC_KEY_FILE', `must name a readable PEM file: ${(err as Error).message}`, keyFile);
    }
  }
  const algs = read(env, 'JWT_ALGORITHMS');
  const allowed = publicKey !== '' ? ASYMMETRIC_ALGS : HMAC_ALGS;
  for (const a of algs) {
    if (!(allowed as readonly string[]).includes(a)) {
      throw new ConfigError(
        'JWT_ALGORITHMS',
        `must list only ${allowed.join(', ')} for ${publicKey !== '' ? 'a public key' : 'a shared secret'}`,
        algs.join(','),
      );
    }
  }

  if (publicKey !== '') {
    const name = keyFile !== '' ? 'JWT_PUBLIC_KEY_FILE' : 'JWT_PUBLIC_KEY';
    let type: string | undefined;
    try {
      type = createPublicKey(publicKey.replace(/\\n/g, '\n')).asymmetricKeyType;
    } catch (err) {
      throw new ConfigError(name, `must be a PEM public key: ${(err as Error).message}`, undefined);
    }
    const byType: Record<string, JwtAlgorithm[]> = { rsa: ['RS256'], 'rsa-pss': ['PS256'], ec: ['ES256'], ed25519: ['EdDSA'] };
    const defaults = type ? byType[type] : undefined;
    if (!defaults && algs.length === 0) throw new ConfigError(name, `has an unsupported key type ${type}`, undefined);
    return Object.freeze({
      key: publicKey.replace(/\\n/g, '\n'),
      algorithms: Object.freeze((algs.length ? algs : defaults!) as JwtAlgorithm[]),
      generated: false,
    });
  }
  if (secret !== '') {
    if (secret.length < 16) throw new ConfigError('JWT_SECRET', 'must be at least 16 characters', undefined);
    // A worker of a primary that generated the development secret knows it is one.
    const generated = read(env, 'GATEWAY_DEV_SECRET') === '1' && read(env, 'NODE_ENV') !== 'production';
    return Object.freeze({ key: secret, algorithms: Object.freeze((algs.length ? algs : ['HS256']) as JwtAlgorithm[]), generated });
  }
  if (read(env, 'NODE_ENV') === 'production') {
    throw new ConfigError('JWT_SECRET', 'or JWT_PUBLIC_KEY must be set when NODE_ENV=production', undefined);
  }
  // Development: a random secret, never "no verification".
  return Object.freeze({ key: randomBytes(32).toString('base64url'), algorithms: Object.freeze(['HS256'] as JwtAlgorithm[]), generated: true });
}

export interface TelegramConfig {
  bots: ReadonlyMap<string, { token: string; secret: string }>;
  apiUrl: string;
  chatIntervalMs: number;
  maxPerS: number;
  maxQueue: number;
}

function readTelegram(env: Env): TelegramConfig | undefined {
  const file = read(env, 'TELEGRAM_BOTS_FILE');
  let raw = read(env, 'TELEGRAM_BOTS');
  const name = file ? 'TELEGRAM_BOTS_FILE' : 'TELEGRAM_BOTS';
  if (file) {
    if (raw) throw new ConfigError('TELEGRAM_BOTS_FILE', 'cannot be set with TELEGRAM_BOTS', undefined);
    try {
      raw = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError('TELEGRAM_BOTS_FILE', `cannot be read: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, file);
    }
  }
  if (!raw.trim()) return undefined;
  const rule = 'must be JSON: {"<creator_id>": {"token": "<digits>:<35+ characters>", "secret": "<1-256 of A-Z a-z 0-9 _ ->"}}';
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new ConfigError(name, rule, undefined);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError(name, rule, undefined);
  const bots = new Map<string, { token: string; secret: string }>();
  for (const [creator, v] of Object.entries(parsed)) {
    const b = v as { token?: unknown; secret?: unknown };
    // The error names the creator, never the token or the secret.
    if (!isValidId(creator)) throw new ConfigError(name, `${rule}; "${creator.slice(0, 64)}" is not a valid creator id`, undefined);
    if (typeof b?.token !== 'string' || !/^\d{1,20}:[A-Za-z0-9_-]{30,}$/.test(b.token)) throw new ConfigError(name, `${rule}; the token of "${creator}" is malformed`, undefined);
    if (typeof b.secret !== 'string' || !/^[A-Za-z0-9_-]{1,256}$/.test(b.secret)) throw new ConfigError(name, `${rule}; the secret of "${creator}" is malformed`, undefined);
    bots.set(creator, Object.freeze({ token: b.token, secret: b.secret }));
  }
  if (bots.size === 0) return undefined;
  return Object.freeze({ bots, apiUrl: read(env, 'TELEGRAM_API_URL')!, chatIntervalMs: read(env, 'TELEGRAM_CHAT_INTERVAL_MS'), maxPerS: read(env, 'TELEGRAM_MAX_PER_S'), maxQueue: read(env, 'TELEGRAM_MAX_QUEUE') });
}

function readRedis(env: Env): RedisTarget | undefined {
  const url = read(env, 'REDIS_URL');
  const nodes = read(env, 'REDIS_CLUSTER_NODES');
  const sentinels = read(env, 'REDIS_SENTINELS');
  const set = [url !== undefined && 'REDIS_URL', nodes.length > 0 && 'REDIS_CLUSTER_NODES', sentinels.length > 0 && 'REDIS_SENTINELS'].filter(Boolean) as string[];
  if (set.length > 1) throw new ConfigError(set[1]!, `cannot be set with ${set[0]}: choose one server, one cluster or one sentinel group`, undefined);
  const password = read(env, 'REDIS_PASSWORD') || undefined;
  if (url !== undefined) return { mode: 'single', url };
  if (nodes.length > 0) return { mode: 'cluster', nodes, ...(password ? { password } : {}) };
  if (sentinels.length > 0) return { mode: 'sentinel', sentinels, name: read(env, 'REDIS_SENTINEL_NAME'), ...(password ? { password } : {}) };
  return undefined;
}

function readAdmin(env: Env): Config['admin'] {
  const port = read(env, 'ADMIN_PORT');
  if (port === undefined) return undefined;
  if (port === read(env, 'PORT')) throw new ConfigError('ADMIN_PORT', 'must differ from PORT', String(port));
  return Object.freeze({ port, host: read(env, 'ADMIN_HOST') });
}

/** Whether Node flags (one, or several separated by spaces) set V8's young-generation size (WORKER_SEMI_SPACE_MB then adds nothing). */
export function setsSemiSpace(flags: string): boolean {
  return /(^|\s)--max[-_]semi[-_]space[-_]size(=|\s|$)/.test(flags);
}

/** Whether Node flags choose the threads of V8's garbage collector (WORKER_GC then adds nothing). */
export function setsGcThreads(flags: string): boolean {
  return /(^|\s)--(no[-_])?(single[-_]threaded[-_]gc|parallel[-_](scavenge|marking|compaction)|concurrent[-_](marking|sweeping))(=|\s|$)/.test(flags);
}

/**
 * The workers' Node flags: the primary's, plus
 * - `--max-semi-space-size` (WORKER_SEMI_SPACE_MB) unless that is 0 or the
 *   primary runs with the flag already (NODE_OPTIONS is handled by the
 *   config). V8 grows a busy worker's young generation to 2 x 16 MB; a
 *   connect storm touches all of it and the pages stay resident, about
 *   30 MB per worker for good (bench/RESULTS.md, connect storm and capacity);
 * - `--single-threaded-gc` (WORKER_GC=single) unless the primary's flags
 *   choose the collector's threads. With a worker per core, V8's helper
 *   threads only compete with the event loops, and a collection that waits
 *   for them stalls every socket of the worker (README, "Garbage collection").
 *
 * The benchmark's baselines give their workers the same flags (bench/baselines),
 * so their ratios compare code, not V8 settings.
 */
export function workerExecArgv(execArgv: readonly string[], o: { semiSpaceMb: number; gc: 'single' | 'parallel' }): string[] {
  const args = [...execArgv];
  if (o.semiSpaceMb > 0 && !execArgv.some(setsSemiSpace)) args.push(`--max-semi-space-size=${o.semiSpaceMb}`);
  if (o.gc === 'single' && !execArgv.some(setsGcThreads)) args.push('--single-threaded-gc');
  return args;
}

/** Reads, validates and freezes the configuration. Throws ConfigError. */
export function loadConfig(env: Env = process.env): Readonly<Config> {
  const cfg: Config = {
    port: read(env, 'PORT'),
    host: read(env, 'HOST'),
    admin: readAdmin(env),
    production: read(env, 'NODE_ENV') === 'production',
    demoPage: read(env, 'DEMO_PAGE') === '' ? read(env, 'NODE_ENV') !== 'production' : read(env, 'DEMO_PAGE') === 'on',
    workers: read(env, 'WORKERS'),
    // Node's own NODE_OPTIONS wins: the flag added to the workers' command line would override it.
    workerSemiSpaceMb: setsSemiSpace(env.NODE_OPTIONS ?? '') ? 0 : read(env, 'WORKER_SEMI_SPACE_MB'),
    workerGc: setsGcThreads(env.NODE_OPTIONS ?? '') ? 'parallel' : read(env, 'WORKER_GC'),
    redis: readRedis(env),
    telegram: readTelegram(env),
    redisPrefix: read(env, 'REDIS_PREFIX'),
    redisCommandTimeoutMs: read(env, 'REDIS_COMMAND_TIMEOUT_MS'),
    redisMaxPendingBytes: read(env, 'REDIS_MAX_PENDING_BYTES'),
    registryLeaseS: read(env, 'REGISTRY_LEASE_S'),
    jwt: readJwt(env),
    allowedOrigins: read(env, 'ALLOWED_ORIGINS'),
    trustedProxies: read(env, 'TRUSTED_PROXIES'),
    maxConnectionsPerIp: read(env, 'MAX_CONNECTIONS_PER_IP'),
    maxConnections: read(env, 'MAX_CONNECTIONS'),
    maxHeaderBytes: read(env, 'MAX_HEADER_BYTES'),
    aiEngineUrl: read(env, 'AI_ENGINE_URL'),
    aiEngineTimeoutMs: read(env, 'AI_ENGINE_TIMEOUT_MS'),
    aiEngineFirstPieceTimeoutMs: read(env, 'AI_ENGINE_FIRST_PIECE_TIMEOUT_MS'),
    aiEngineIdleTimeoutMs: read(env, 'AI_ENGINE_IDLE_TIMEOUT_MS'),
    aiEngineMaxResponseBytes: read(env, 'AI_ENGINE_MAX_RESPONSE_BYTES'),
    aiEchoDelayMs: read(env, 'AI_ECHO_DELAY_MS'),
    aiEngineMaxInflight: read(env, 'AI_ENGINE_MAX_INFLIGHT'),
    aiEngineConnections: read(env, 'AI_ENGINE_CONNECTIONS'),
    aiEngineMaxInflightPerCreator: read(env, 'AI_ENGINE_MAX_INFLIGHT_PER_CREATOR'),
    aiBreakerFailures: read(env, 'AI_BREAKER_FAILURES'),
    aiBreakerCooldownMs: read(env, 'AI_BREAKER_COOLDOWN_MS'),
    rateLimitMessages: read(env, 'RATE_LIMIT_MESSAGES'),
    rateLimitWindowS: read(env, 'RATE_LIMIT_WINDOW_S'),
    aiBudgetPerMinute: read(env, 'AI_BUDGET_PER_MINUTE'),
    rateLimitSyncMs: read(env, 'RATE_LIMIT_SYNC_MS'),
    idleTimeoutS: read(env, 'IDLE_TIMEOUT_S'),
    maxPayloadBytes: read(env, 'MAX_PAYLOAD_BYTES'),
    maxBackpressureBytes: read(env, 'MAX_BACKPRESSURE_BYTES'),
    maxQueuedMessages: read(env, 'MAX_QUEUED_MESSAGES'),
    maxMessageChars: read(env, 'MAX_MESSAGE_CHARS'),
    frameRateLimit: read(env, 'FRAME_RATE_LIMIT'),
    connectRatePerIp: read(env, 'CONNECT_RATE_PER_IP'),
    history: Object.freeze({
      size: read(env, 'HISTORY_SIZE'),
      ttlMs: read(env, 'HISTORY_TTL_S') * 1000,
      maxBytes: read(env, 'HISTORY_MAX_BYTES'),
      checkMs: read(env, 'HISTORY_CHECK_S') * 1000,
    }),
    validationMode: read(env, 'VALIDATION_MODE'),
    validationThresholdBytes: read(env, 'VALIDATION_POOL_THRESHOLD_BYTES'),
    validationThreads: read(env, 'VALIDATION_THREADS'),
    validationMaxQueue: read(env, 'VALIDATION_MAX_QUEUE'),
    shutdownTimeoutS: read(env, 'SHUTDOWN_TIMEOUT_S'),
    logLevel: read(env, 'LOG_LEVEL'),
    tls: readTls(env),
  };
  return Object.freeze(cfg);
}
