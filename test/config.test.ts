/** Configuration: defaults, every rule, and start-up stopping on a bad value. */
import t from 'tap';
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { loadConfig, ConfigError } from '../src/config/index.js';
import { parseEnvFile } from '../src/config/env-file.js';
import { MAIN } from './helpers/cluster.js';
import { freePort } from './helpers/net.js';

const S = { JWT_SECRET: 'x'.repeat(32) };

void t.test('defaults', async (t) => {
  const c = loadConfig(S);
  t.match(c, {
    port: 9001,
    host: '0.0.0.0',
    redis: undefined,
    aiEngineUrl: undefined,
    aiEngineTimeoutMs: 30000,
    rateLimitMessages: 20,
    rateLimitWindowS: 10,
    idleTimeoutS: 120,
    maxPayloadBytes: 65536,
    maxBackpressureBytes: 1048576,
    shutdownTimeoutS: 30,
    logLevel: 'info',
  });
  t.ok(c.workers >= 1);
  t.same(c.jwt.algorithms, ['HS256']);
  t.ok(Object.isFrozen(c), 'frozen');
  t.ok(Object.isFrozen(c.jwt), 'nested objects frozen');
});

void t.test('each bad value throws a ConfigError naming the variable', async (t) => {
  const bad: Array<[string, string]> = [
    ['PORT', 'abc'], ['PORT', '70000'], ['PORT', '-1'],
    ['HOST', 'a b'],
    ['WORKERS', 'abc'], ['WORKERS', '0'], ['WORKERS', '1.5'],
    ['REDIS_URL', 'http://x'], ['REDIS_URL', 'not a url'],
    ['AI_ENGINE_URL', 'ftp://x'],
    ['AI_ENGINE_TIMEOUT_MS', '0'],
    ['RATE_LIMIT_MESSAGES', '-1'], ['RATE_LIMIT_WINDOW_S', 'ten'], ['AI_BUDGET_PER_MINUTE', 'x'], ['RATE_LIMIT_SYNC_MS', '5'],
    ['IDLE_TIMEOUT_S', '5'], ['IDLE_TIMEOUT_S', '1'], ['IDLE_TIMEOUT_S', '961'],
    ['MAX_PAYLOAD_BYTES', '10'], ['MAX_BACKPRESSURE_BYTES', 'x'],
    ['SHUTDOWN_TIMEOUT_S', '0'],
    ['LOG_LEVEL', 'loud'],
    ['JWT_ALGORITHMS', 'none'], ['JWT_ALGORITHMS', 'RS256'],
    ['JWT_SECRET', 'short'],
    ['JWT_PUBLIC_KEY', 'not a pem'],
  ];
  for (const [name, value] of bad) {
    const env = { ...S, [name]: value };
    if (name === 'JWT_PUBLIC_KEY') delete (env as Record<string, string>).JWT_SECRET;
    let err: unknown;
    try {
      loadConfig(env);
    } catch (e) {
      err = e;
    }
    t.ok(err instanceof ConfigError && err.variable === name && err.message.startsWith(name), `${name}=${value}: ${(err as Error)?.message}`);
  }
});

void t.test('errors about secrets never echo the value, even a malformed one', async (t) => {
  for (const [name, value] of [['JWT_SECRET', 'hunter2'], ['REDIS_URL', 'http://:hunter2@x'], ['REDIS_URL', 'redis//hunter2']] as const) {
    const err = (() => {
      try {
        loadConfig({ ...S, [name]: value });
      } catch (e) {
        return e as Error;
      }
      return undefined;
    })();
    t.ok(err instanceof ConfigError, `${name} refused`);
    t.notMatch(err!.message, /hunter2/, `${name}: ${err!.message}`);
  }
  let fileErr = '';
  try {
    parseEnvFile('A=1\nJWT_SECRET: hunter2\n', 'gateway.env');
  } catch (e) {
    fileErr = (e as Error).message;
  }
  t.match(fileErr, /line 2 of gateway.env is not KEY=VALUE/, 'an env-file error names the line');
  t.notMatch(fileErr, /hunter2/, 'and never shows it');
});

void t.test('IDLE_TIMEOUT_S accepts 0 and 8..960 (uWS aborts on 1-7 and >960)', async (t) => {
  for (const v of ['0', '8', '960']) t.equal(loadConfig({ ...S, IDLE_TIMEOUT_S: v }).idleTimeoutS, Number(v));
});

void t.test('JWT keys', async (t) => {
  await t.test('no key: a random development secret, never "no verification"', async (t) => {
    const a = loadConfig({});
    const b = loadConfig({});
    t.ok(a.jwt.generated);
    t.ok(a.jwt.key.length >= 32);
    t.not(a.jwt.key, b.jwt.key);
  });
  await t.test('no key in production stops start-up', async (t) => {
    t.throws(() => loadConfig({ NODE_ENV: 'production' }), /JWT_SECRET/);
  });
  await t.test('a public key picks its algorithm from the key type', async (t) => {
    for (const [type, alg] of [['rsa', 'RS256'], ['ec', 'ES256'], ['ed25519', 'EdDSA']] as const) {
      const opts = type === 'rsa' ? { modulusLength: 2048 } : type === 'ec' ? { namedCurve: 'P-256' } : {};
      const { publicKey } = generateKeyPairSync(type as 'rsa', opts as never) as unknown as { publicKey: import('node:crypto').KeyObject };
      const c = loadConfig({ JWT_PUBLIC_KEY: publicKey.export({ type: 'spki', format: 'pem' }).toString() });
      t.same(c.jwt.algorithms, [alg], type);
    }
  });
  await t.test('secret and public key together are refused', async (t) => {
    t.throws(() => loadConfig({ ...S, JWT_PUBLIC_KEY: 'x' }), /JWT_SECRET/);
  });
});


function startWith(env: Record<string, string>) {
  return new Promise<{ code: number | null; out: string }>((resolve) => {
    const p = spawn(process.execPath, [MAIN], { env: { ...process.env, ...S, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), 10_000);
    p.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

void t.test('a bad value stops the real process with a message naming the variable', async (t) => {
  const port = String(await freePort());
  for (const [name, value] of [['WORKERS', 'abc'], ['IDLE_TIMEOUT_S', '3'], ['PORT', 'http'], ['LOG_LEVEL', 'verbose']]) {
    const r = await startWith({ PORT: port, [name!]: value! });
    t.equal(r.code, 1, `${name} exits 1`);
    t.match(r.out, new RegExp(`${name} must`), `${name} is named: ${r.out.trim()}`);
    t.notMatch(r.out, /listening/, 'nothing listened');
  }
});

void t.test('Redis: one server, a Cluster or a Sentinel group, never two; host:port lists checked', async (t) => {
  t.same(loadConfig({ ...S, REDIS_URL: 'redis://127.0.0.1:6379' }).redis, { mode: 'single', url: 'redis://127.0.0.1:6379' });
  t.same(loadConfig({ ...S, REDIS_CLUSTER_NODES: '10.0.0.1:7000, redis-b:7001,[::1]:7002' }).redis, {
    mode: 'cluster',
    nodes: [
      { host: '10.0.0.1', port: 7000 },
      { host: 'redis-b', port: 7001 },
      { host: '::1', port: 7002 },
    ],
  });
  t.same(loadConfig({ ...S, REDIS_SENTINELS: 's1:26379', REDIS_SENTINEL_NAME: 'main', REDIS_PASSWORD: 'pw' }).redis, { mode: 'sentinel', sentinels: [{ host: 's1', port: 26379 }], name: 'main', password: 'pw' });
  t.throws(() => loadConfig({ ...S, REDIS_URL: 'redis://a:1', REDIS_CLUSTER_NODES: 'b:2' }), /REDIS_CLUSTER_NODES cannot be set with REDIS_URL/);
  t.throws(() => loadConfig({ ...S, REDIS_CLUSTER_NODES: 'b:2', REDIS_SENTINELS: 'c:3' }), /REDIS_SENTINELS cannot be set with REDIS_CLUSTER_NODES/);
  t.throws(() => loadConfig({ ...S, REDIS_CLUSTER_NODES: 'nohost' }), /REDIS_CLUSTER_NODES must be a comma-separated list of host:port/);
  t.throws(() => loadConfig({ ...S, REDIS_SENTINELS: 'a:70000' }), /REDIS_SENTINELS must be a comma-separated list of host:port/);
  t.notMatch(String((() => { try { loadConfig({ ...S, REDIS_PASSWORD: 'hunter2', REDIS_SENTINELS: 'x' }); } catch (e) { return (e as Error).message; } return ''; })()), /hunter2/, 'a bad value next to a secret never echoes the secret');
});

void t.test('Telegram bots: JSON per creator, checked, never echoed', async (t) => {
  const token = `123456:${'A'.repeat(35)}`;
  const c = loadConfig({ ...S, TELEGRAM_BOTS: JSON.stringify({ shop: { token, secret: 's3cret' } }) }).telegram!;
  t.same([...c.bots.entries()], [['shop', { token, secret: 's3cret' }]]);
  t.match(c, { apiUrl: 'https://api.telegram.org', chatIntervalMs: 1000, maxPerS: 30, maxQueue: 10000 });
  t.equal(loadConfig(S).telegram, undefined, 'none configured: no channel');
  const bad = (bots: string) => {
    try {
      loadConfig({ ...S, TELEGRAM_BOTS: bots });
      return '';
    } catch (e) {
      return (e as Error).message;
    }
  };
  t.match(bad('{"shop": {"token": "nope-hunter2", "secret": "s"}}'), /TELEGRAM_BOTS .*the token of "shop" is malformed/);
  t.notMatch(bad('{"shop": {"token": "nope-hunter2", "secret": "s"}}'), /hunter2/, 'the token is not echoed');
  t.match(bad(`{"shop": {"token": "${token}", "secret": "has space"}}`), /the secret of "shop" is malformed/);
  t.match(bad('{"bad id!": {}}'), /is not a valid creator id/);
  t.match(bad('[1]'), /TELEGRAM_BOTS must be JSON/);
  t.throws(() => loadConfig({ ...S, TELEGRAM_BOTS_FILE: '/nonexistent/bots.json' }), /TELEGRAM_BOTS_FILE cannot be read: ENOENT/);
});
