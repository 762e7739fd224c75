/**
 * SIGHUP: a validated configuration re-read, then a rolling restart - one
 * worker at a time, the new one listening before the old one leaves, the
 * old one's clients closed with 1012 over a few seconds.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startCluster } from './helpers/cluster.js';
import { Client, connectWidget } from './helpers/client.js';
import { widgetToken } from './helpers/tokens.js';
import { until } from './helpers/net.js';
import { parseEnvFile } from '../src/config/env-file.js';

const pidsOf = async (c: { get(p: string): Promise<{ body: any }> }) => Object.keys((await c.get('/api/v1/stats')).body.connections_by_worker).sort();

void t.test('parseEnvFile', async (t) => {
  t.same(parseEnvFile('# c\nA=1\n\nexport B="two words"\nC=\'x=y\'\n'), { A: '1', B: 'two words', C: 'x=y' });
  t.throws(() => parseEnvFile('not a line'), /GATEWAY_ENV_FILE/);
});

/**
 * With SO_REUSEPORT, closing a worker's listen socket resets the handshakes
 * waiting in its kernel accept queue, unless net.ipv4.tcp_migrate_req moves
 * them to another listener of the port (Linux 5.14+). deploy/sysctl.conf sets
 * it; the test sets it in this network namespace (CI runs as root).
 */
function enableMigrateReq(): string | undefined {
  const f = '/proc/sys/net/ipv4/tcp_migrate_req';
  try {
    if (readFileSync(f, 'utf8').trim() !== '1') writeFileSync(f, '1');
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

void t.test('rolling restart under load: no failed connection attempt, every old client gets 1012', async (t) => {
  const cannot = enableMigrateReq();
  t.notOk(cannot, `net.ipv4.tcp_migrate_req=1 in this namespace${cannot ? `: ${cannot}` : ''}`);
  const dir = mkdtempSync(path.join(tmpdir(), 'cgw-'));
  const envFile = path.join(dir, 'gateway.env');
  writeFileSync(envFile, 'RATE_LIMIT_MESSAGES=1000\n');
  const c = await startCluster({ GATEWAY_ENV_FILE: envFile });
  t.teardown(() => c.stop('SIGKILL'));
  const before = await pidsOf(c);
  const old = await Promise.all(Array.from({ length: 30 }, () => connectWidget(c.port, 'alice', widgetToken('alice'))));

  // A client connecting over and over through the restart.
  // A connection that opens on an old worker just before it retires gets
  // 1012 like every other old client: that is a restart, not a failure.
  let attempts = 0;
  let restarted = 0;
  const failures: string[] = [];
  let stop = false;
  const fresh: Client[] = [];
  const churn = (async () => {
    while (!stop) {
      attempts++;
      let x: Client;
      try {
        x = await connectWidget(c.port, 'alice', widgetToken('alice'));
      } catch (err) {
        failures.push(`connect: ${(err as Error).message}`);
        continue;
      }
      fresh.push(x);
      try {
        const r = await x.ask('during restart');
        if (r.content !== 'during restart') failures.push(`answer: ${JSON.stringify(r)}`);
      } catch (err) {
        const closed = await Promise.race([x.closed, new Promise((r) => setTimeout(r, 100, undefined))]);
        if ((closed as { code?: number } | undefined)?.code === 1012) restarted++;
        else failures.push(`chat: ${(err as Error).message} ${JSON.stringify(closed)}`);
      }
    }
  })();

  const started = Date.now();
  c.proc.kill('SIGHUP');
  const closes = await Promise.all(old.map((o) => o.closed));
  const spread = Date.now() - started;
  await until(async () => (await pidsOf(c)).filter((p) => before.includes(p)).length === 0 && (await c.get('/readyz')).status === 200, 20_000, 'all workers replaced');
  stop = true;
  await churn;
  t.ok(closes.every((x) => x.code === 1012 && x.reason === 'Service Restart'), 'every old client got 1012 "Service Restart"');
  t.ok(spread >= 1500, `closes were spread out (${spread} ms for all)`);
  t.ok(attempts > 5, `${attempts} connection attempts during the restart`);
  t.same(failures, [], `none failed (${restarted} fresh connections were themselves restarted with 1012)`);
  t.equal((await pidsOf(c)).length, 2);
  for (const x of fresh) if (x.ws.readyState === x.ws.OPEN) x.close();
  await until(() => /rolling restart done/.test(c.output()), 5000, 'the primary to log the end of the restart');
});

void t.test('an invalid configuration on SIGHUP is refused and the old one stays', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'cgw-'));
  const envFile = path.join(dir, 'gateway.env');
  writeFileSync(envFile, '');
  const c = await startCluster({ GATEWAY_ENV_FILE: envFile });
  t.teardown(() => c.stop('SIGKILL'));
  const before = await pidsOf(c);
  const client = await connectWidget(c.port, 'alice', widgetToken('alice'));
  writeFileSync(envFile, 'IDLE_TIMEOUT_S=3\n');
  c.proc.kill('SIGHUP');
  await until(() => /configuration reload refused/.test(c.output()), 5000, 'refusal logged');
  t.match(c.output(), /IDLE_TIMEOUT_S must be 0 \(disabled\) or from 8 to 960/);
  t.same(await pidsOf(c), before, 'no worker was replaced');
  t.equal((await client.ask('still here')).content, 'still here');

  await t.test('a malformed line never reaches the log, nor does a secret\'s bad value', async (t) => {
    const mark = c.output().length;
    writeFileSync(envFile, 'JWT_SECRET: hunter2-typo-secret-value\n');
    c.proc.kill('SIGHUP');
    await until(() => /configuration reload refused/.test(c.output().slice(mark)), 5000, 'refusal logged');
    t.match(c.output().slice(mark), /line 1 of .* is not KEY=VALUE/, 'the line is named');
    writeFileSync(envFile, 'JWT_SECRET=short-hunter3\n');
    const mark2 = c.output().length;
    c.proc.kill('SIGHUP');
    await until(() => /configuration reload refused/.test(c.output().slice(mark2)), 5000, 'refusal logged');
    t.match(c.output().slice(mark2), /JWT_SECRET must be at least 16 characters/);
    t.notMatch(c.output(), /hunter2|hunter3/, 'no secret in the output');
  });
  client.close();
});

void t.test('a SIGHUP during a rolling restart is remembered: the cluster rolls once more, with the newest file', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'cgw-'));
  const envFile = path.join(dir, 'gateway.env');
  writeFileSync(envFile, 'MAX_MESSAGE_CHARS=1000\n');
  const c = await startCluster({ GATEWAY_ENV_FILE: envFile });
  t.teardown(() => c.stop('SIGKILL'));
  c.proc.kill('SIGHUP');
  await until(() => /"msg":"rolling restart"/.test(c.output()), 5000, 'the first rolling restart');
  writeFileSync(envFile, 'MAX_MESSAGE_CHARS=5\n');
  c.proc.kill('SIGHUP');
  await until(() => (c.output().match(/rolling restart done/g) ?? []).length === 2, 40_000, 'two rolling restarts done');
  const x = await connectWidget(c.port, 'alice', widgetToken('alice'));
  x.send({ type: 'user_message', content: 'longer than five' });
  t.match(await x.nextOfType('error'), { error: 'Message too long' }, 'the second file is in force');
  x.close();
});

void t.test('a SIGHUP sent to the whole process group rolls the cluster once; the workers survive it', async (t) => {
  const c = await startCluster();
  t.teardown(() => c.stop('SIGKILL'));
  const before = await pidsOf(c);
  const x = await connectWidget(c.port, 'alice', widgetToken('alice'));
  process.kill(-c.proc.pid!, 'SIGHUP');
  await until(() => /rolling restart done/.test(c.output()), 30_000, 'the rolling restart');
  t.same(await x.closed, { code: 1012, reason: 'Service Restart' }, 'the old worker\'s client got 1012, not a crash');
  t.notMatch(c.output(), /worker died/, 'no worker died of the signal');
  t.equal((c.output().match(/"msg":"rolling restart"/g) ?? []).length, 1, 'one rolling restart');
  const after = await pidsOf(c);
  t.equal(after.filter((p) => before.includes(p)).length, 0, 'both workers replaced');
});
