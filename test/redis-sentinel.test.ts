/**
 * Redis Sentinel mode (REDIS_SENTINELS): two gateway hosts on a primary with
 * a replica behind a real sentinel. The primary is killed (-9) while
 * broadcasts flow; the sentinel promotes the replica and the gateways follow
 * it by themselves: no client reconnects, cross-host delivery resumes.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { startCluster, type RunningCluster } from './helpers/cluster.js';
import { Client, connectWidget } from './helpers/client.js';
import { serviceToken, widgetToken } from './helpers/tokens.js';
import { startSentinelGroup } from './helpers/redis-sentinel.js';
import { sleep, until } from './helpers/net.js';

const post = (c: RunningCluster, creator: string, body: unknown) =>
  fetch(`http://127.0.0.1:${c.port}/api/v1/creators/${creator}/broadcast`, { method: 'POST', headers: { authorization: `Bearer ${serviceToken()}` }, body: JSON.stringify(body) });

void t.test('two hosts behind Redis Sentinel: a primary killed, the replica promoted, the gateways follow', async (t) => {
  const g = await startSentinelGroup();
  const env = { REDIS_SENTINELS: g.sentinels, REDIS_SENTINEL_NAME: g.name, REDIS_PREFIX: `s${randomBytes(3).toString('hex')}:`, REGISTRY_LEASE_S: '2', SHUTDOWN_TIMEOUT_S: '5' };
  const A = await startCluster(env);
  const B = await startCluster(env);
  t.teardown(async () => {
    await A.stop('SIGKILL');
    await B.stop('SIGKILL');
    await g.stop();
  });
  const open = (c: RunningCluster, n: number): Promise<Client[]> => Promise.all(Array.from({ length: n }, () => connectWidget(c.port, 'alice', widgetToken('alice'))));
  const [onA, onB] = [await open(A, 4), await open(B, 4)];
  const all = [...onA, ...onB];

  t.equal((await post(A, 'alice', { type: 'hello' })).status, 202);
  for (const c of all) t.same(await c.next(), { type: 'hello' });
  // Registry writes are gathered for 25 ms per worker: the count catches up with the sockets shortly after they open.
  await until(async () => (await A.get('/api/v1/stats')).body.total_connections === 8, 5000, 'all 8 registered');
  t.pass('stats through the sentinel-managed primary count all 8');

  await g.primary.kill();
  const killed = Date.now();
  await until(async () => (await g.primaryPort()) === g.replica.port, 20_000, 'the sentinel to promote the replica');
  t.pass(`the sentinel promoted the replica ${Date.now() - killed} ms after the kill`);
  await until(async () => (await A.get('/readyz')).status === 200 && (await B.get('/readyz')).status === 200, 20_000, 'both hosts ready on the new primary');
  let i = 0;
  await until(async () => {
    await post(B, 'alice', { type: 'after', i: i++ }).catch(() => undefined);
    await sleep(100);
    return onA.every((c) => c.inbox.some((f) => f.type === 'after'));
  }, 20_000, 'cross-host broadcasts again');
  t.pass(`cross-host broadcasts flow again ${Date.now() - killed} ms after the kill`);
  t.ok(all.every((c) => c.ws.readyState === c.ws.OPEN), 'no client reconnected');
  await until(async () => (await A.get('/api/v1/stats')).body.total_connections === 8, 10_000, 'the registry rewritten on the new primary');
  t.pass('the registry is whole on the new primary');
});
