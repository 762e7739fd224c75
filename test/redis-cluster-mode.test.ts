/**
 * Redis Cluster mode (REDIS_CLUSTER_NODES): two gateway hosts on a real
 * Redis Cluster of 3 masters and 3 replicas. What the one-Redis suite
 * checks (test/redis-cluster.test.ts, rate-limits, nothing-lost) holds here
 * too: stats, the registry, broadcasts, targeted sends, shared budgets,
 * widget.v2 resume across hosts. Then the faults a Cluster adds: a master
 * killed (-9) while broadcasts flow, its replica promoted; a master
 * restarted empty.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import calculateSlot from 'cluster-key-slot';
import { startCluster, type RunningCluster } from './helpers/cluster.js';
import { exactlyOnce, open, post, stats } from './helpers/hosts.js';
import { connectWidget, connectionId } from './helpers/client.js';
import { widgetToken } from './helpers/tokens.js';
import { startRedisCluster, type RedisClusterHandle } from './helpers/redis-cluster.js';
import type { RedisServer } from './helpers/redis.js';
import { V2Client } from './helpers/v2.js';
import { ERRORS } from '../src/protocol/frames.js';
import { sleep, until } from './helpers/net.js';
import { exitWhenDone } from './helpers/linger.js';

function hostEnv(rc: RedisClusterHandle, prefix: string, extra: Record<string, string> = {}) {
  return { REDIS_CLUSTER_NODES: rc.nodes, REDIS_PREFIX: prefix, REGISTRY_LEASE_S: '2', SHUTDOWN_TIMEOUT_S: '5', HISTORY_CHECK_S: '1', ...extra };
}

/** The master serving `key`'s slot now. */
async function masterOf(rc: RedisClusterHandle, key: string): Promise<RedisServer> {
  const slot = calculateSlot(key);
  for (const s of rc.servers) {
    const c = new Redis({ port: s.port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    c.on('error', () => {});
    try {
      await c.connect();
      const ranges = (await c.call('CLUSTER', 'SLOTS')) as Array<[number, number, [string, number]]>;
      const r = ranges.find(([a, b]) => slot >= a && slot <= b);
      if (r) return rc.servers.find((x) => x.port === Number(r[2][1]))!;
    } catch {
      /* down: ask another */
    } finally {
      c.disconnect();
    }
  }
  throw new Error(`no master for slot ${slot}`);
}

async function metric(c: RunningCluster, name: string): Promise<number> {
  const text = (await fetch(`http://127.0.0.1:${c.port}/metrics`).then((r) => r.text())) as string;
  return [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+(?:\\.\\d+)?)$`, 'gm'))].reduce((a, m) => a + Number(m[1]), 0);
}

exitWhenDone(t);

void t.test('two hosts on a Redis Cluster (3 masters, 3 replicas)', async (t) => {
  const rc = await startRedisCluster();
  const prefix = `k${randomBytes(3).toString('hex')}:`;
  const A = await startCluster(hostEnv(rc, prefix, { RATE_LIMIT_MESSAGES: '6', RATE_LIMIT_WINDOW_S: '60' }));
  const B = await startCluster(hostEnv(rc, prefix, { RATE_LIMIT_MESSAGES: '6', RATE_LIMIT_WINDOW_S: '60' }));
  const cc = rc.client();
  t.teardown(async () => {
    await A.stop('SIGKILL');
    await B.stop('SIGKILL');
    await rc.stop();
  });
  const aliceA = await open(A, 'alice', 8);
  const aliceB = await open(B, 'alice', 8);
  const bob = [...(await open(A, 'bob', 2)), ...(await open(B, 'bob', 2))];
  const alice = [...aliceA, ...aliceB];
  const registry = `${prefix}{reg}:active_connections`;

  await t.test('stats agree on both hosts; the registry (one hash-tagged slot) holds every connection', async (t) => {
    await until(async () => (await stats(A)).total_connections === 20, 8000, 'stats on A');
    t.same((await stats(A)).connections_by_creator, { alice: 16, bob: 4 });
    t.same((await stats(B)).connections_by_creator, { alice: 16, bob: 4 });
    t.equal((await stats(A)).workers, 4);
    t.equal(await cc.hlen(registry), 20);
    t.match(JSON.parse((await cc.hget(registry, connectionId(aliceB[0]!)))!), { creator_id: 'alice', node: String });
  });

  await t.test('a broadcast entering either host reaches every alice socket exactly once (sharded pub/sub)', async (t) => {
    t.equal((await post(A, '/api/v1/creators/alice/broadcast', { type: 'news', via: 'A' })).status, 202);
    await exactlyOnce(t, alice, { type: 'news', via: 'A' });
    t.equal((await post(B, '/api/v1/creators/alice/broadcast', { type: 'news', via: 'B' })).status, 202);
    await exactlyOnce(t, alice, { type: 'news', via: 'B' });
    t.ok(bob.every((b) => b.inbox.length === 0), 'bob got nothing');
  });

  await t.test('targeted sends cross hosts through the node inboxes; unknown connections are 404', async (t) => {
    for (const [entry, target] of [[A, aliceB[3]!], [B, aliceA[4]!]] as const) {
      t.equal((await post(entry, `/api/v1/connections/${connectionId(target)}/messages`, { type: 'dm' })).status, 202);
      t.same(await target.next(), { type: 'dm' });
    }
    t.equal((await post(A, '/api/v1/connections/nobody/messages', { type: 'dm' })).status, 404);
  });

  await t.test('a session\'s budget is shared by its tabs on both hosts', async (t) => {
    const session = `shared-${randomBytes(3).toString('hex')}`;
    const [onA, onB] = [await connectWidget(A.port, 'carol', widgetToken('carol'), session), await connectWidget(B.port, 'carol', widgetToken('carol'), session)];
    for (let i = 0; i < 6; i++) t.equal((await onA.ask(`q${i}`)).content, `q${i}`, `answered on A (${i + 1} of the 6 the session may send)`);
    await sleep(400); // the takes reach the shared store (RATE_LIMIT_SYNC_MS)
    for (let i = 0; i < 2; i++) {
      onB.send({ type: 'user_message', content: `more${i}` });
      t.match(await onB.next(), { type: 'error', error: ERRORS.RATE_LIMITED }, 'the tab on host B has nothing left');
    }
    onA.close();
    onB.close();
  });

  await t.test('widget.v2: broadcasts missed while away are resumed on the other host', async (t) => {
    const base = (c: RunningCluster) => `ws://127.0.0.1:${c.port}`;
    const v = new V2Client(base(A), 'dave', widgetToken('dave'));
    await v.connect();
    t.equal(v.protocol, 'widget.v2');
    v.stop();
    for (let i = 0; i < 5; i++) t.equal((await post(B, '/api/v1/creators/dave/broadcast', { type: 'missed', i })).status, 202);
    const w = new V2Client(base(B), 'dave', widgetToken('dave'));
    w.broadcast = v.broadcast;
    const st = await w.connect();
    t.match(st.details, { recovered: { broadcast: true } });
    await w.next((f) => f.type === 'broadcast' && (f.data as { i?: number }).i === 4, 3000);
    t.same(w.offsets('broadcast'), [1, 2, 3, 4, 5], 'every missed frame, in order, once');
    w.stop();
  });

  await t.test('kill -9 of the master holding the broadcast slot while broadcasts flow: replica promoted, delivery resumes, loss counted or resumed', async (t) => {
    const victim = await masterOf(rc, `${prefix}{b/alice}:live`);
    const v2 = new V2Client(`ws://127.0.0.1:${A.port}`, 'alice', widgetToken('alice'));
    await v2.connect();
    v2.keepConnected();
    t.teardown(() => v2.stop());
    for (const x of alice) x.inbox.splice(0);
    let seq = 0;
    const accepted: number[] = [];
    let flowing = true;
    const flow = (async () => {
      while (flowing) {
        const i = seq++;
        const r = await post(i % 2 ? A : B, '/api/v1/creators/alice/broadcast', { type: 'flow', i }).catch(() => undefined);
        if (r?.status === 202) accepted.push(i);
        await sleep(20);
      }
    })();
    await sleep(300);
    await victim.kill();
    const killed = Date.now();
    await until(async () => (await masterOf(rc, `${prefix}{b/alice}:live`)).port !== victim.port, 20_000, 'a replica to take the slot');
    await rc.healthy(20_000);
    t.pass(`the cluster is whole again ${Date.now() - killed} ms after the kill (a replica promoted)`);
    // Delivery resumes by itself: no client reconnects, the subscribers move to the new master.
    const marker = seq + 5;
    await until(() => accepted.some((i) => i >= marker) && aliceA.every((x) => x.inbox.some((f) => f.type === 'flow' && (f.i as number) >= marker)) && aliceB.every((x) => x.inbox.some((f) => f.type === 'flow' && (f.i as number) >= marker)), 20_000, 'broadcasts to reach every socket again');
    t.pass(`broadcasts reach every socket on both hosts again ${Date.now() - killed} ms after the kill`);
    flowing = false;
    await flow;
    await sleep(500);
    t.ok(alice.every((x) => x.ws.readyState === x.ws.OPEN), 'no widget.v1 client was disconnected');
    const got = aliceA[0]!.inbox.filter((f) => f.type === 'flow').map((f) => f.i as number);
    const missing = accepted.filter((i) => !got.includes(i));
    t.ok(missing.length <= accepted.length, `a widget.v1 socket missed ${missing.length} of ${accepted.length} accepted broadcasts around the failover (at most once)`);
    // widget.v2: every accepted broadcast is delivered, or the loss is announced (continuity_lost): never silence.
    const v2got = new Set(v2.frames.filter((f) => f.type === 'broadcast').map((f) => (f.data as { i: number }).i));
    const lost = v2.frames.filter((f) => f.type === 'continuity_lost');
    const silent = accepted.filter((i) => !v2got.has(i));
    t.ok(silent.length === 0 || lost.length > 0, `widget.v2: ${silent.length} accepted broadcasts not delivered, ${lost.length} continuity_lost announced`);
    const v2offsets = v2.offsets('broadcast');
    t.same(new Set(v2offsets).size, v2offsets.length, 'widget.v2: no offset twice');
    const counted = (await metric(A, 'gateway_redis_failures_total')) + (await metric(B, 'gateway_redis_failures_total')) + (await metric(A, 'gateway_redis_publish_refused_total')) + (await metric(B, 'gateway_redis_publish_refused_total'));
    t.ok(counted > 0 || missing.length === 0, `failures during the failover counted (${counted})`);
    await victim.restart(); // back as a replica of the promoted master
    await rc.healthy(20_000);
  });

  await t.test('a master restarted empty: widget.v2 readers of its streams get continuity_lost, v1 goes on', async (t) => {
    const victim = await masterOf(rc, `${prefix}{b/erin}:m`);
    const v = new V2Client(`ws://127.0.0.1:${A.port}`, 'erin', widgetToken('erin'));
    await v.connect();
    v.keepConnected();
    const v1 = await connectWidget(B.port, 'erin', widgetToken('erin'));
    t.teardown(() => {
      v.stop();
      v1.close();
    });
    for (let i = 0; i < 3; i++) t.equal((await post(A, '/api/v1/creators/erin/broadcast', { type: 'before', i })).status, 202);
    await v.next((f) => f.type === 'broadcast' && (f.data as { i?: number }).i === 2, 3000);
    const epoch = v.broadcast!.epoch;
    // Restart at once, before the cluster notices (node timeout 1 s): it comes back a master, with nothing.
    await victim.kill();
    await victim.restart();
    await rc.healthy(20_000);
    await until(async () => (await post(A, '/api/v1/creators/erin/broadcast', { type: 'after' })).status === 202, 10_000, 'publishing again');
    const lost = await v.next((f) => f.type === 'continuity_lost' && f.stream === 'broadcast', 10_000);
    t.not(lost.epoch, epoch, `continuity_lost with a new epoch (${String(lost.epoch)})`);
    // widget.v1 is at most once: host B's sharded subscriber may still be on its way back to the
    // restarted master when the first "after" is published, so publish until one arrives.
    const since = Date.now();
    await until(async () => {
      if (v1.inbox.some((f) => f.type === 'after')) return true;
      await post(A, '/api/v1/creators/erin/broadcast', { type: 'after' });
      return false;
    }, 20_000, 'v1 gets broadcasts again');
    t.pass(`widget.v1 sockets go on (${Date.now() - since} ms after publishing was accepted again)`);
  });
});
