/** TLS: uWS SSLApp serves wss:// and https:// with a certificate generated here. */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import https from 'node:https';
import { startGateway } from './helpers/gateway.js';
import { Client } from './helpers/client.js';
import { widgetToken } from './helpers/tokens.js';
import { loadConfig, ConfigError } from '../src/config/index.js';

const dir = mkdtempSync(path.join(tmpdir(), 'cgw-tls-'));
const cert = path.join(dir, 'cert.pem');
const key = path.join(dir, 'key.pem');
execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost',
  '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
const ca = readFileSync(cert);

void t.test('wss:// and https:// with TLS_CERT_FILE / TLS_KEY_FILE', async (t) => {
  const g = await startGateway({ TLS_CERT_FILE: cert, TLS_KEY_FILE: key });
  t.teardown(() => g.close());
  const c = new Client(`wss://127.0.0.1:${g.port}/api/v1/channels/widget/alice/connect?token=${widgetToken('alice')}`, { ca });
  t.equal((await c.nextOfType('connection_status')).status, 'connected');
  t.equal((await c.ask('over tls')).content, 'over tls');
  c.close();
  const status = await new Promise<number>((resolve, reject) =>
    https.get(`https://127.0.0.1:${g.port}/healthz`, { ca }, (res) => { res.resume(); resolve(res.statusCode!); }).on('error', reject),
  );
  t.equal(status, 200);
});

void t.test('TLS settings are validated', async (t) => {
  const base = { JWT_SECRET: 'x'.repeat(32) };
  for (const [env, variable] of [
    [{ TLS_CERT_FILE: cert }, 'TLS_KEY_FILE'],
    [{ TLS_KEY_FILE: key }, 'TLS_CERT_FILE'],
    [{ TLS_CERT_FILE: path.join(dir, 'missing.pem'), TLS_KEY_FILE: key }, 'TLS_CERT_FILE'],
    [{ TLS_CERT_FILE: key, TLS_KEY_FILE: key }, 'TLS_CERT_FILE'],
  ] as const) {
    let err: unknown;
    try { loadConfig({ ...base, ...env }); } catch (e) { err = e; }
    t.ok(err instanceof ConfigError && err.variable === variable, `${variable}: ${(err as Error)?.message}`);
  }
  writeFileSync(path.join(dir, 'empty.pem'), '');
});
