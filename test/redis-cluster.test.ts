/**
 * Redis mode: two hosts (two gateway clusters on different ports, two
 * workers each) sharing one real redis-server behave as one gateway.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { startCluster } from './helpers/cluster.js';
import { exactlyOnce, open, post, stats } from './helpers/hosts.js';
import { Client, connectionId } from './helpers/client.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { sleep, until } from './helpers/net.js';

const LEASE_S = 2;
/** A dead node's entries go within lease + sweep (lease/3). */
const BOUND_MS = LEASE_S * 1000 * (4 / 3);

function hostEnv(redis: RedisServer, prefix: string) {
  return { REDIS_URL: redis.url, REDIS_PREFIX: prefix, REGISTRY_LEASE_S: String(LEASE_S), SHUTDOWN_TIMEOUT_S: '5' };
}

void t.test('two hosts, one Redis', async (t) => {
  const redis = await startRedis();
  const prefix = `t${randomBytes(3).toString('hex')}:`;
  const A = await startCluster(hostEnv(redis, prefix));
  const B = await startCluster(hostEnv(redis, prefix));
  const rc = redis.client();
  t.teardown(async () => {
    await A.stop('SIGKILL');
    await B.stop('SIGKILL');
    await redis.stop();
  });

  const aliceA = await open(A, 'alice', 10);
  const aliceB = await open(B, 'alice', 10);
  const bob = [...(await open(A, 'bob', 3)), ...(await open(B, 'bob', 3))];
  const alice = [...aliceA, ...aliceB];

  await t.test('stats agree on both hosts and count all four workers', async (t) => {
    await until(async () => (await stats(A)).total_connections === 26, 5000, 'stats on A');
    const [sa, sb] = [await stats(A), await stats(B)];
    t.same(sa.connections_by_creator, { alice: 20, bob: 6 });
    t.same(sb.connections_by_creator, sa.connections_by_creator);
    t.equal(sa.workers, 4);
    t.equal(await rc.hlen(`${prefix}active_connections`), 26, "the seed's active_connections hash holds every connection");
    const entry = JSON.parse((await rc.hget(`${prefix}active_connections`, connectionId(aliceB[0]!)))!);
    t.match(entry, { creator_id: 'alice', session_id: String, connected_at: String, node: String });
  });

  await t.test('a broadcast entering either host reaches every alice socket on both, exactly once', async (t) => {
    t.equal((await post(A, '/api/v1/creators/alice/broadcast', { type: 'news', via: 'A' })).status, 202);
    await exactlyOnce(t, alice, { type: 'news', via: 'A' });
    t.equal((await post(B, '/api/v1/creators/alice/broadcast', { type: 'news', via: 'B' })).status, 202);
    await exactlyOnce(t, alice, { type: 'news', via: 'B' });
    t.ok(bob.every((b) => b.inbox.length === 0), 'bob got nothing');
  });

  await t.test('targeted sends cross hosts; unknown connections are 404', async (t) => {
    for (const [entry, target] of [[A, aliceB[3]!], [B, aliceA[4]!], [A, aliceA[5]!]] as const) {
      t.equal((await post(entry, `/api/v1/connections/${connectionId(target)}/messages`, { type: 'dm' })).status, 202);
      t.same(await target.next(), { type: 'dm' });
    }
    t.equal((await post(A, '/api/v1/connections/nobody/messages', { type: 'dm' })).status, 404);
    await sleep(100);
    t.ok(alice.every((x) => x.inbox.length === 0), 'nobody else got a dm');
  });

  await t.test('SIGTERM removes the host\'s registry entries at once', async (t) => {
    const C = await startCluster(hostEnv(redis, prefix));
    await open(C, 'carol', 5);
    await until(async () => (await stats(A)).connections_by_creator.carol === 5, 5000, 'carol registered');
    t.same(await C.stop('SIGTERM'), { code: 0, signal: null });
    const s = await stats(A);
    t.equal(s.connections_by_creator.carol, undefined, 'carol is gone from stats right after exit');
    t.equal(await rc.hlen(`${prefix}active_connections`), 26, 'and from active_connections');
    t.equal(s.workers, 4);
  });

  await t.test('Redis killed and restarted mid-traffic', async (t) => {
    await redis.kill();
    await until(async () => (await A.get('/readyz')).status === 503 && (await B.get('/readyz')).status === 503, 10_000, 'readyz 503');
    t.pass('/readyz answers 503 on both hosts while Redis is down');
    for (const x of [aliceA[0]!, aliceB[0]!]) t.equal((await x.ask('local chat goes on')).content, 'local chat goes on');
    t.equal(A.proc.exitCode, null, 'host A is alive');
    t.equal(B.proc.exitCode, null, 'host B is alive');
    const refused = await post(A, '/api/v1/creators/alice/broadcast', { type: 'while-down' });
    t.equal(refused.status, 503, 'a broadcast while Redis is down is refused (503), not half-delivered');
    t.match(await refused.json(), { reason: 'overloaded' });

    await redis.restart();
    const back = Date.now();
    await until(async () => (await A.get('/readyz')).status === 200 && (await B.get('/readyz')).status === 200, 15_000, 'readyz 200');
    t.pass(`ready again ${Date.now() - back} ms after Redis returned`);
    // Local delivery worked while down; cross-node copies were dropped (at-most-once).
    for (const x of alice) x.inbox.splice(0);
    await until(async () => {
      await post(B, '/api/v1/creators/alice/broadcast', { type: 'probe' });
      await sleep(100);
      return aliceA.every((x) => x.inbox.some((f) => f.type === 'probe'));
    }, 10_000, 'cross-host broadcasts to work again');
    t.pass(`cross-host broadcasts work ${Date.now() - back} ms after Redis returned, with no client reconnecting`);
    for (const x of alice) x.inbox.splice(0);
    t.equal((await post(B, '/api/v1/creators/alice/broadcast', { type: 'after' })).status, 202);
    await exactlyOnce(t, alice, { type: 'after' });
    await until(async () => (await stats(A)).total_connections === 26, 5000, 'the registry rewritten');
    t.ok(alice.every((x) => x.ws.readyState === x.ws.OPEN), 'no client was disconnected');
  });

  await t.test('kill -9 of a host: its entries disappear within the bound; the other host is unaffected', async (t) => {
    const before = await rc.hlen(`${prefix}active_connections`);
    await B.killHost();
    const killed = Date.now();
    await until(async () => (await rc.hlen(`${prefix}active_connections`)) === before - 13, BOUND_MS * 3, 'reaping');
    const took = Date.now() - killed;
    t.ok(took <= BOUND_MS + 2000, `entries removed in ${took} ms (bound ${BOUND_MS} ms + sweep jitter)`);
    const s = await stats(A);
    t.same(s.connections_by_creator, { alice: 10, bob: 3 });
    t.equal(s.workers, 2);
    await exactlyOnce(t, [], {});
    t.equal((await post(A, '/api/v1/creators/alice/broadcast', { type: 'still' })).status, 202);
    await exactlyOnce(t, aliceA, { type: 'still' });
    t.equal((await aliceA[1]!.ask('fine')).content, 'fine');
    t.equal((await A.get('/readyz')).status, 200);
  });
});

void t.test('a connect storm costs a handful of Redis round trips, not one per socket', async (t) => {
  const redis = await startRedis();
  const prefix = `s${randomBytes(3).toString('hex')}:`;
  const A = await startCluster(hostEnv(redis, prefix));
  const rc = redis.client();
  t.teardown(async () => {
    await A.stop('SIGKILL');
    await redis.stop();
  });
  const calls = async () => {
    const info = await rc.info('commandstats');
    const n = (cmd: string) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(info)?.[1] ?? 0);
    return { hset: n('hset'), sadd: n('sadd'), subscribe: n('subscribe'), total: [...info.matchAll(/calls=(\d+)/g)].reduce((a, m) => a + Number(m[1]), 0) };
  };
  await until(async () => (await A.get('/readyz')).status === 200, 5000);
  const before = await calls();
  const N = 2000;
  const socks: Client[] = [];
  const started = Date.now();
  for (let i = 0; i < N; i += 500) socks.push(...(await open(A, `storm${i % 3}`, 500)));
  const stormMs = Date.now() - started;
  await until(async () => (await rc.hlen(`${prefix}active_connections`)) === N, 10_000, 'all registered');
  // One command per 25 ms window per worker (2 workers), plus the edges.
  const bound = 2 * (Math.ceil(stormMs / 25) + 2);
  const after = await calls();
  const d = { hset: after.hset - before.hset, sadd: after.sadd - before.sadd, subscribe: after.subscribe - before.subscribe };
  t.comment(`for ${N} connections: ${JSON.stringify(d)}, ${after.total - before.total} commands in all (INFO commandstats)`);
  t.ok(d.hset <= bound, `HSET ${d.hset} times for ${N} registrations in ${stormMs} ms (bound ${bound})`);
  t.ok(d.subscribe <= bound, `SUBSCRIBE ${d.subscribe} times for ${2 * N} topics (bound ${bound})`);
  t.ok(after.total - before.total < N / 2, 'far fewer commands than sockets');
  socks.forEach((x) => x.close());
  await until(async () => (await rc.hlen(`${prefix}active_connections`)) === 0, 10_000, 'all unregistered after the clients left');
  t.pass('every entry removed when the sockets closed');
});
