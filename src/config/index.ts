/**
 * The one typed configuration of the gateway.
 *
 * Read once from the environment through the explicit table `VARIABLES`
 * (env name -> key, parser, default), validated, then frozen. A bad value
 * throws a `ConfigError` whose message names the variable and the rule, e.g.
 * `WORKERS must be a positive integer (got "abc")`; `main.ts` prints it and
 * exits 1 before anything listens.
 */
import os from 'node:os';
import { createPublicKey, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { GatewayError } from '../errors.js';

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

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  port: number;
  host: string;
  workers: number;
  redisUrl: string | undefined;
  redisPrefix: string;
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
  /** Open sockets per client IP per worker; 0: no limit. */
  maxConnectionsPerIp: number;
  /** Open sockets per worker, kept under the process's file-descriptor limit. */
  maxConnections: number;
  /** Total size of an upgrade request's headers. */
  maxHeaderBytes: number;
  aiEngineUrl: string | undefined;
  aiEngineTimeoutMs: number;
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
  validationMode: 'inline' | 'pool' | 'auto';
  validationThresholdBytes: number;
  validationThreads: number;
  validationMaxQueue: number;
  shutdownTimeoutS: number;
  logLevel: LogLevel;
  /** Serve wss:// and https:// from uWS (SSLApp) when set. */
  tls: { certFile: string; keyFile: string } | undefined;
}

export class ConfigError extends GatewayError {
  constructor(
    readonly variable: string,
    rule: string,
    got: string | undefined,
  ) {
    super('GW_ERR_CONFIG', `${variable} ${rule}${got === undefined ? '' : ` (got ${JSON.stringify(got)})`}`);
    this.name = 'ConfigError';
  }
}

type Env = Readonly<Record<string, string | undefined>>;

// ---- parsers: each returns the value or throws ConfigError naming the variable

function int(name: string, raw: string, min: number, max: number): number {
  if (!/^-?\d+$/.test(raw.trim())) throw new ConfigError(name, `must be an integer from ${min} to ${max}`, raw);
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(name, `must be an integer from ${min} to ${max}`, raw);
  }
  return n;
}

function url(name: string, raw: string, protocols: readonly string[]): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new ConfigError(name, `must be a URL (${protocols.join(', ')})`, raw);
  }
  if (!protocols.includes(u.protocol)) throw new ConfigError(name, `must use ${protocols.join(' or ')}`, raw);
  return raw;
}

/** A table entry for an integer variable within [min, max]. */
function intVar(def: string, doc: string, min: number, max: number) {
  return { def, doc, parse: (n: string, v: string) => int(n, v, min, max) };
}

/** uWS aborts the whole process on an idleTimeout of 1-7 or over 960. */
function idleTimeout(name: string, raw: string): number {
  const n = int(name, raw, 0, 960);
  if (n !== 0 && n < 8) throw new ConfigError(name, 'must be 0 (disabled) or from 8 to 960 seconds', raw);
  return n;
}

const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/**
 * The table: environment variable -> how it is read. `def` is the default
 * used when the variable is unset or empty.
 */
export const VARIABLES = {
  PORT: intVar('9001', 'listen port', 0, 65535),
  HOST: {
    def: '0.0.0.0',
    doc: 'listen address',
    parse: (n: string, v: string) => {
      if (!/^[A-Za-z0-9.:\-[\]]+$/.test(v)) throw new ConfigError(n, 'must be an IP address or host name', v);
      return v;
    },
  },
  WORKERS: {
    def: String(os.availableParallelism()),
    doc: 'uWS worker processes (default: CPU count)',
    parse: (n: string, v: string) => {
      if (!/^\d+$/.test(v.trim()) || Number(v) < 1 || Number(v) > 256) {
        throw new ConfigError(n, 'must be a positive integer (at most 256)', v);
      }
      return Number(v);
    },
  },
  REDIS_URL: {
    def: '',
    doc: 'unset: embedded mode, no Redis',
    parse: (n: string, v: string) => (v === '' ? undefined : url(n, v, ['redis:', 'rediss:'])),
  },
  REDIS_PREFIX: {
    def: 'cgw:',
    doc: 'prefix of every Redis key and channel, so several gateways can share one Redis',
    parse: (n: string, v: string) => {
      if (!/^[A-Za-z0-9:_.-]{1,64}$/.test(v)) throw new ConfigError(n, 'must be 1-64 characters of A-Z a-z 0-9 : _ . -', v);
      return v;
    },
  },
  REGISTRY_LEASE_S: intVar('15', "a dead node's registry entries are removed within 4/3 of this", 1, 3600),
  AI_ENGINE_URL: {
    def: '',
    doc: 'unset: embedded echo engine',
    parse: (n: string, v: string) => (v === '' ? undefined : url(n, v, ['http:', 'https:'])),
  },
  AI_ENGINE_TIMEOUT_MS: intVar('30000', 'AI engine request time-out', 1, 600_000),
  AI_ENGINE_MAX_INFLIGHT: intVar('1024', 'AI requests in flight per worker; the excess is answered "Failed to process message"', 1, 1_000_000),
  AI_ENGINE_CONNECTIONS: intVar('512', 'keep-alive connections to the AI engine per worker (answers in progress at once)', 1, 65_536),
  AI_ENGINE_MAX_INFLIGHT_PER_CREATOR: intVar('256', 'AI requests in flight per creator per worker', 1, 1_000_000),
  AI_BREAKER_FAILURES: intVar('20', 'consecutive AI engine failures that open the circuit breaker', 1, 100_000),
  AI_BREAKER_COOLDOWN_MS: intVar('5000', 'how long an open circuit fails fast before one probe request', 100, 600_000),
  RATE_LIMIT_MESSAGES: intVar('20', 'user messages per session per window, across the cluster; 0: off', 0, 1_000_000),
  RATE_LIMIT_WINDOW_S: intVar('10', 'rate-limit window', 1, 86_400),
  AI_BUDGET_PER_MINUTE: intVar('0', 'AI requests per creator per minute across the cluster (burst as large); over it "AI request budget exceeded, try again later"; 0: off', 0, 100_000_000),
  RATE_LIMIT_SYNC_MS: intVar('100', 'how often session and creator budgets are reconciled with the other workers and hosts (primary, or Redis); bounds the overshoot', 10, 10_000),
  IDLE_TIMEOUT_S: { def: '120', doc: 'uWS idleTimeout; the server pings automatically', parse: idleTimeout },
  MAX_PAYLOAD_BYTES: intVar('65536', 'larger frames close the socket with 1009', 256, 16 * 1024 * 1024),
  MAX_BACKPRESSURE_BYTES: intVar('1048576', 'bytes buffered for one slow socket before it is closed with 4009', 1024, 256 * 1024 * 1024),
  MAX_MESSAGE_CHARS: intVar('16000', 'longest user_message content (characters, after trimming); longer ones are answered "Message too long"', 1, 16 * 1024 * 1024),
  MAX_QUEUED_MESSAGES: intVar('16', 'user messages waiting for an answer per connection; the excess gets an error frame', 1, 10_000),
  FRAME_RATE_LIMIT: intVar('100', 'frames per second per socket (burst as large); over it the socket is closed with 4008; 0: off', 0, 1_000_000),
  CONNECT_RATE_PER_IP: intVar('50', 'new sockets per client IP per second per worker (burst as large); over it 4030; 0: off', 0, 1_000_000),
  MAX_CONNECTIONS_PER_IP: intVar('0', 'open sockets per client IP per worker (4029 beyond); 0: off', 0, 10_000_000),
  MAX_HEADER_BYTES: intVar('8192', 'total size of an upgrade request\'s headers (431 beyond)', 512, 1_048_576),
  JWT_JWKS_REFRESH_S: intVar('600', 'JWKS refresh period', 10, 86_400),
  JWT_JWKS_MIN_REFRESH_S: intVar('30', 'an unknown kid refreshes the JWKS at most this often', 1, 3600),
  VALIDATION_MODE: {
    // auto, as measured (bench/RESULTS.md, "Validation"): below the threshold it
    // is inline (same throughput); 60 KiB frames go to the pool, which costs
    // their own throughput but keeps everyone else's round trip and throughput
    // up while they flow (small clients' p99 1.27x of alone, against 1.67x inline).
    def: 'auto',
    doc: 'inline | pool | auto: where client frames are decoded and validated',
    parse: (n: string, v: string) => {
      if (v !== 'inline' && v !== 'pool' && v !== 'auto') throw new ConfigError(n, 'must be inline, pool or auto', v);
      return v;
    },
  },
  VALIDATION_POOL_THRESHOLD_BYTES: intVar('32768', 'auto mode: frames of at least this size are validated in the pool', 1, 16 * 1024 * 1024),
  VALIDATION_THREADS: intVar('1', 'pool threads per worker', 1, 64),
  VALIDATION_MAX_QUEUE: intVar('1024', 'frames waiting for the pool per worker; beyond, "Server busy, try again"', 1, 1_000_000),
  SHUTDOWN_TIMEOUT_S: intVar('30', 'graceful shutdown deadline', 1, 3600),
  LOG_LEVEL: {
    def: 'info',
    doc: 'pino level',
    parse: (n: string, v: string) => {
      if (!(LOG_LEVELS as readonly string[]).includes(v)) throw new ConfigError(n, `must be one of ${LOG_LEVELS.join(', ')}`, v);
      return v as LogLevel;
    },
  },
} as const;

function read<K extends keyof typeof VARIABLES>(env: Env, name: K): ReturnType<(typeof VARIABLES)[K]['parse']> {
  const spec = VARIABLES[name];
  const raw = env[name];
  const value = raw === undefined || raw === '' ? spec.def : raw;
  return spec.parse(name, value) as ReturnType<(typeof VARIABLES)[K]['parse']>;
}

function readTls(env: Env): Config['tls'] {
  const certFile = env.TLS_CERT_FILE ?? '';
  const keyFile = env.TLS_KEY_FILE ?? '';
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

function readLimits(env: Env): Pick<Config, 'allowedOrigins' | 'maxConnectionsPerIp' | 'maxConnections' | 'maxHeaderBytes'> {
  const originsRaw = env.ALLOWED_ORIGINS ?? '';
  let allowedOrigins: string[] | undefined;
  if (originsRaw !== '' && originsRaw !== '*') {
    allowedOrigins = originsRaw.split(',').map((o) => o.trim()).filter(Boolean);
    for (const o of allowedOrigins) {
      let u: URL | undefined;
      try {
        u = new URL(o);
      } catch {
        /* refused below */
      }
      if (!u || u.origin !== o) throw new ConfigError('ALLOWED_ORIGINS', 'must list origins like https://shop.example.com (scheme://host[:port], no path)', originsRaw);
    }
  }
  const fdLimit = fileDescriptorLimit();
  const ceiling = fdLimit === undefined ? 1_000_000 : Math.max(1, fdLimit - FD_RESERVE);
  const rawMax = env.MAX_CONNECTIONS ?? '';
  const maxConnections = rawMax === '' ? ceiling : int('MAX_CONNECTIONS', rawMax, 1, 10_000_000);
  if (maxConnections > ceiling) {
    throw new ConfigError('MAX_CONNECTIONS', `must stay under the file-descriptor limit (${fdLimit}) minus ${FD_RESERVE}, i.e. at most ${ceiling}`, rawMax);
  }
  return {
    allowedOrigins: allowedOrigins ? Object.freeze(allowedOrigins) : undefined,
    maxConnectionsPerIp: read(env, 'MAX_CONNECTIONS_PER_IP'),
    maxConnections,
    maxHeaderBytes: read(env, 'MAX_HEADER_BYTES'),
  };
}

function readJwt(env: Env): Config['jwt'] {
  const common = {
    jwksRefreshS: read(env, 'JWT_JWKS_REFRESH_S'),
    jwksMinRefreshS: read(env, 'JWT_JWKS_MIN_REFRESH_S'),
    ...(env.JWT_ISSUER ? { issuer: env.JWT_ISSUER } : {}),
    ...(env.JWT_AUDIENCE ? { audience: env.JWT_AUDIENCE } : {}),
  };
  const jwksUrl = env.JWT_JWKS_URL ?? '';
  if (jwksUrl !== '') {
    url('JWT_JWKS_URL', jwksUrl, ['https:', 'http:']);
    if (env.JWT_SECRET || env.JWT_PUBLIC_KEY || env.JWT_PUBLIC_KEY_FILE) {
      throw new ConfigError('JWT_JWKS_URL', 'must not be set together with JWT_SECRET / JWT_PUBLIC_KEY', undefined);
    }
    const algsRaw = env.JWT_ALGORITHMS ?? '';
    const algs = algsRaw === '' ? ['RS256', 'PS256', 'ES256', 'EdDSA'] : algsRaw.split(',').map((a) => a.trim());
    for (const a of algs) {
      if (!(ASYMMETRIC_ALGS as readonly string[]).includes(a)) throw new ConfigError('JWT_ALGORITHMS', `must list only ${ASYMMETRIC_ALGS.join(', ')} with a JWKS URL`, algsRaw);
    }
    return Object.freeze({ key: '', algorithms: Object.freeze(algs as JwtAlgorithm[]), generated: false, jwksUrl, ...common });
  }
  const jwt = readStaticJwt(env);
  return Object.freeze({ ...jwt, ...common });
}

function readStaticJwt(env: Env): Pick<Config['jwt'], 'key' | 'algorithms' | 'generated'> {
  const secret = env.JWT_SECRET ?? '';
  let publicKey = env.JWT_PUBLIC_KEY ?? '';
  const keyFile = env.JWT_PUBLIC_KEY_FILE ?? '';
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
  const algsRaw = env.JWT_ALGORITHMS ?? '';
  const algs = algsRaw === '' ? [] : algsRaw.split(',').map((a) => a.trim());
  const allowed = publicKey !== '' ? ASYMMETRIC_ALGS : HMAC_ALGS;
  for (const a of algs) {
    if (!(allowed as readonly string[]).includes(a)) {
      throw new ConfigError(
        'JWT_ALGORITHMS',
        `must list only ${allowed.join(', ')} for ${publicKey !== '' ? 'a public key' : 'a shared secret'}`,
        algsRaw,
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
    return Object.freeze({ key: secret, algorithms: Object.freeze((algs.length ? algs : ['HS256']) as JwtAlgorithm[]), generated: false });
  }
  if (env.NODE_ENV === 'production') {
    throw new ConfigError('JWT_SECRET', 'or JWT_PUBLIC_KEY must be set when NODE_ENV=production', undefined);
  }
  // Development: a random secret, never "no verification".
  return Object.freeze({ key: randomBytes(32).toString('base64url'), algorithms: Object.freeze(['HS256'] as JwtAlgorithm[]), generated: true });
}

/** Reads, validates and freezes the configuration. Throws ConfigError. */
export function loadConfig(env: Env = process.env): Readonly<Config> {
  const cfg: Config = {
    port: read(env, 'PORT'),
    host: read(env, 'HOST'),
    workers: read(env, 'WORKERS'),
    redisUrl: read(env, 'REDIS_URL'),
    redisPrefix: read(env, 'REDIS_PREFIX'),
    registryLeaseS: read(env, 'REGISTRY_LEASE_S'),
    jwt: readJwt(env),
    aiEngineUrl: read(env, 'AI_ENGINE_URL'),
    aiEngineTimeoutMs: read(env, 'AI_ENGINE_TIMEOUT_MS'),
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
    validationMode: read(env, 'VALIDATION_MODE'),
    validationThresholdBytes: read(env, 'VALIDATION_POOL_THRESHOLD_BYTES'),
    validationThreads: read(env, 'VALIDATION_THREADS'),
    validationMaxQueue: read(env, 'VALIDATION_MAX_QUEUE'),
    shutdownTimeoutS: read(env, 'SHUTDOWN_TIMEOUT_S'),
    logLevel: read(env, 'LOG_LEVEL'),
    tls: readTls(env),
    ...readLimits(env),
  };
  return Object.freeze(cfg);
}
