/**
 * RedisSubscriber on a real Redis Cluster, against a fault of ioredis 6.0.0
 * that left a loaded CI host never ready: its Cluster client reconnected
 * while the sharded subscriber group waited for a subscriber to connect;
 * the group stopped that subscriber and dropped its listeners, the connect
 * promise never settled, and the group stayed "resetting" forever, every
 * SSUBSCRIBE failing with "No sharded subscriber for slot" on a client that
 * said it was ready. The test plays that exact sequence through ioredis's
 * own API (disconnect(true), which the client calls itself after a slots
 * refresh that reached no node) at the moment the group waits, and expects
 * the subscriber to replace the wedged client and make its subscription.
 */
import t from 'tap';
import { Writable } from 'node:stream';
import pino from 'pino';
import type { Cluster, Redis } from 'ioredis';
import { connectDeadlineMs, createRedis, quit } from '../src/redis/client.js';
import { REBUILD_AFTER_MS, RedisSubscriber } from '../src/redis/subscriber.js';
import { startRedisCluster } from './helpers/redis-cluster.js';
import { sleep } from './helpers/net.js';

/** What this test reads of ioredis's sharded subscriber group (private state of the pinned 6.0.0). */
interface Group {
  isResetting: boolean;
  shardedSubscribers: Map<string, { subscriberStatus: string }>;
}

void t.test('a Cluster client whose sharded subscriber group wedged is replaced, and the subscription is made', async (t) => {
  const rc = await startRedisCluster();
  await rc.healthy(20_000);
  const lines: string[] = [];
  const log = pino({ level: 'warn' }, new Writable({ write: (chunk: Buffer, _e, cb) => (lines.push(chunk.toString()), cb()) }));
  const made: Redis[] = [];
  let wedged: Promise<boolean> | undefined;
  /** Calls disconnect(true) while the group waits for a starting subscriber (false: that moment never came in 5 s). */
  const wedge = (c: Redis): Promise<boolean> =>
    new Promise((resolve) => {
      const group = (c as unknown as { shardedSubscribers: Group }).shardedSubscribers;
      const until = Date.now() + 5000;
      const poll = () => {
        if (group.isResetting && [...group.shardedSubscribers.values()].some((s) => s.subscriberStatus === 'starting')) {
          c.disconnect(true);
          resolve(true);
        } else if (Date.now() > until) resolve(false);
        else setImmediate(poll);
      };
      poll();
    });
  const make = () => {
    const c = createRedis({ mode: 'cluster', nodes: rc.servers.map((s) => ({ host: '127.0.0.1', port: s.port })) }, 'test:sub', log, { commandTimeoutMs: 1000, subscriber: true });
    made.push(c);
    if (made.length === 1) wedged = wedge(c);
    return c;
  };
  // As link.ts makes it: a wedge is told by the connect deadline (commandTimeoutMs 1000 here) and a second.
  const wedgedAfterMs = connectDeadlineMs(1000) + 1000;
  const sub = new RedisSubscriber(make, log, true, wedgedAfterMs);
  const got: string[] = [];
  sub.on('t:', (_channel, message) => got.push(message.toString()));
  t.teardown(async () => {
    sub.close();
    await quit(sub.client);
    for (const c of made) c.disconnect();
    await rc.stop();
  });
  const began = Date.now();
  sub.want('t:x');
  t.ok(await wedged, 'ioredis reconnected the client while its subscriber group waited for a subscriber to connect');
  const first = made[0]!;
  while (first.status !== 'ready' && Date.now() - began < 10_000) await sleep(5);
  t.equal(first.status, 'ready', 'the wedged client says it is ready');
  const probe = await first.ssubscribe('t:probe').then(
    () => 'made',
    (err: Error) => err.message,
  );
  t.match(probe, /No sharded subscriber for slot/, 'and a sharded subscription fails on it (the ioredis fault; if this fails, ioredis fixed it and the workaround can go)');
  let timer: NodeJS.Timeout | undefined;
  const confirmed = await Promise.race([sub.whenConfirmed('t:x').then(() => true), new Promise<false>((r) => (timer = setTimeout(() => r(false), REBUILD_AFTER_MS / 2)))]);
  clearTimeout(timer);
  // Not a timing claim: a wedge must not hold subscriptions for the 15 s other failures wait.
  t.ok(confirmed, `the subscription is made, by a client replaced once "No sharded subscriber" lasted ${wedgedAfterMs} ms, within ${REBUILD_AFTER_MS / 2000} s`);
  t.equal(sub.rebuilds, 1, 'by one replaced client');
  t.equal(made.length, 2);
  t.not(sub.client, first, 'the subscriber uses the new client');
  t.match(lines.join(''), /replaced it/, 'the replacement is logged');
  const pub = rc.client() as Cluster;
  await pub.spublish('t:x', 'hello');
  const deadline = Date.now() + 5000;
  while (got.length === 0 && Date.now() < deadline) await sleep(20);
  t.same(got, ['hello'], 'messages on the channel arrive through the new client');
});
