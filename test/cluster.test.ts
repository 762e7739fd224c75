/**
 * The real cluster (`node dist/main.js`, 2 workers) as a child process:
 * fan-out across workers, cluster-wide stats, worker replacement, SIGTERM.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { startCluster, type RunningCluster } from './helpers/cluster.js';
import { Client, connectWidget, connectionId } from './helpers/client.js';
import { serviceToken, widgetToken } from './helpers/tokens.js';
import { until } from './helpers/net.js';
import { Client as UndiciClient } from 'undici';

/** Opens `n` sockets for a creator; SO_REUSEPORT spreads them over the workers. */
async function openMany(c: RunningCluster, creator: string, n: number): Promise<Client[]> {
  return Promise.all(Array.from({ length: n }, () => connectWidget(c.port, creator, widgetToken(creator))));
}

/**
 * POSTs a broadcast over one kept-alive connection per cluster, so that a
 * sequence of broadcasts enters one worker: the order is kept per publisher
 * (one entry worker). Broadcasts entering different workers may interleave
 * on the others, since each worker delivers its own at once and relays them
 * after (fetch opened a new connection now and then, which made this test
 * flaky).
 */
const publishers = new Map<number, UndiciClient>();
async function broadcast(c: RunningCluster, creator: string, body: unknown): Promise<{ status: number }> {
  let client = publishers.get(c.port);
  if (!client) publishers.set(c.port, (client = new UndiciClient(`http://127.0.0.1:${c.port}`, { pipelining: 1 })));
  const res = await client.request({
    method: 'POST',
    path: `/api/v1/creators/${creator}/broadcast`,
    headers: { authorization: `Bearer ${serviceToken()}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  await res.body.dump();
  return { status: res.statusCode };
}
t.teardown(async () => Promise.all([...publishers.values()].map((p) => p.close())));

/** A process's command line, as its arguments. */
function nodeFlags(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
}

void t.test('fan-out and stats across two workers', async (t) => {
  const c = await startCluster();
  t.teardown(() => c.stop('SIGKILL'));
  const alice = await openMany(c, 'alice', 24);
  const bob = await openMany(c, 'bob', 6);
  t.teardown(() => [...alice, ...bob].forEach((x) => x.close()));

  const stats = (await c.get('/api/v1/stats')).body;
  t.equal(stats.total_connections, 30, 'stats count every worker');
  t.same(stats.connections_by_creator, { alice: 24, bob: 6 });
  t.equal(stats.workers, 2);
  const perWorker = Object.values(stats.connections_by_worker) as number[];
  t.equal(perWorker.length, 2);
  t.ok(perWorker.every((n) => n > 0), `connections landed on both workers (${perWorker.join(' + ')})`);
  for (const pid of Object.keys(stats.connections_by_worker)) {
    t.ok(nodeFlags(Number(pid)).includes('--max-semi-space-size=4'), `worker ${pid} runs with WORKER_SEMI_SPACE_MB's default (--max-semi-space-size=4)`);
  }

  await t.test('a broadcast reaches every alice socket on both workers exactly once, and no bob socket', async (t) => {
    for (let i = 0; i < 5; i++) t.equal((await broadcast(c, 'alice', { type: 'news', seq: i })).status, 202);
    for (const a of alice) {
      for (let i = 0; i < 5; i++) t.same(await a.next(), { type: 'news', seq: i });
    }
    await new Promise((r) => setTimeout(r, 200));
    t.ok(alice.every((a) => a.inbox.length === 0), 'no duplicates');
    t.ok(bob.every((b) => b.inbox.length === 0), 'bob received nothing');
  });

  await t.test('a targeted send reaches one connection whichever worker holds it', async (t) => {
    for (const target of alice.slice(0, 6)) {
      const r = await fetch(`http://127.0.0.1:${c.port}/api/v1/connections/${connectionId(target)}/messages`, {
        method: 'POST',
        headers: { authorization: `Bearer ${serviceToken()}` },
        body: JSON.stringify({ type: 'direct', to: connectionId(target) }),
      });
      t.equal(r.status, 202);
      t.same(await target.next(), { type: 'direct', to: connectionId(target) });
    }
    await new Promise((r) => setTimeout(r, 100));
    t.ok(alice.every((a) => a.inbox.length === 0), 'nobody else got it');
  });

  await t.test('chat works on both workers', async (t) => {
    for (const a of alice.slice(0, 8)) t.equal((await a.ask('hello')).content, 'hello');
  });

  await t.test('stats drop as sockets close', async (t) => {
    for (const b of bob) b.close();
    await until(async () => (await c.get('/api/v1/stats')).body.total_connections === 24, 5000, 'stats to drop');
    t.same((await c.get('/api/v1/stats')).body.connections_by_creator, { alice: 24 });
  });
});

void t.test('a killed worker is replaced and the port keeps serving', async (t) => {
  const c = await startCluster();
  t.teardown(() => c.stop('SIGKILL'));
  const socks = await openMany(c, 'alice', 16);
  const before = (await c.get('/api/v1/stats')).body.connections_by_worker as Record<string, number>;
  const [victim, survivorPid] = Object.keys(before).map(Number);
  process.kill(victim!, 'SIGKILL');

  await until(async () => {
    const s = (await c.get('/api/v1/stats')).body;
    return s.workers === 2 && !(String(victim) in s.connections_by_worker);
  }, 15_000, 'a replacement worker');
  await until(async () => (await c.get('/readyz')).status === 200, 10_000, 'ready again');

  const survivors = socks.filter((s) => s.ws.readyState === s.ws.OPEN);
  t.equal(survivors.length, before[String(survivorPid)], "the other worker's clients stayed connected");
  for (const s of survivors) t.equal((await s.ask('still?')).content, 'still?');
  const fresh = await openMany(c, 'alice', 8);
  for (const f of fresh) t.equal((await f.ask('new')).content, 'new');
  const pids = Object.keys((await c.get('/api/v1/stats')).body.connections_by_worker);
  t.notOk(pids.includes(String(victim)));
  for (const pid of pids) t.ok(nodeFlags(Number(pid)).includes('--max-semi-space-size=4'), `worker ${pid} (a replacement too) runs with the workers' flags`);
  t.match(c.output(), /worker died; replacing it/);
  [...socks, ...fresh].forEach((s) => s.close());
});

void t.test('every worker killed at once: the primary stays and replaces them all (it used to exit 0)', async (t) => {
  const c = await startCluster();
  t.teardown(() => c.stop('SIGKILL'));
  await openMany(c, 'alice', 8).then((socks) => socks.forEach((s) => s.close()));
  const pids = Object.keys((await c.get('/api/v1/stats')).body.connections_by_worker as Record<string, number>).map(Number);
  t.equal(pids.length, 2);
  for (const pid of pids) process.kill(pid, 'SIGKILL');
  await until(async () => (await c.get('/readyz')).status === 200, 15_000, 'ready again with two new workers');
  const now = Object.keys((await c.get('/api/v1/stats')).body.connections_by_worker).map(Number);
  t.equal(now.filter((p) => pids.includes(p)).length, 0, 'both are new processes');
  t.equal(c.proc.exitCode, null, 'the primary is still running');
  const s = await connectWidget(c.port, 'alice', widgetToken('alice'));
  t.equal((await s.ask('back')).content, 'back');
  s.close();
});

void t.test('SIGTERM: every client sees 1001 "Server shutdown" and the process exits 0 in time', async (t) => {
  const c = await startCluster({ SHUTDOWN_TIMEOUT_S: '5' });
  const socks = await openMany(c, 'alice', 20);
  const started = Date.now();
  const exit = await c.stop('SIGTERM');
  const took = Date.now() - started;
  t.same(exit, { code: 0, signal: null });
  t.ok(took < 5000, `exited in ${took} ms`);
  for (const s of socks) t.same(await s.closed, { code: 1001, reason: 'Server shutdown' });
});

void t.test('SIGINT to the whole process group also shuts down cleanly', async (t) => {
  const c = await startCluster({ SHUTDOWN_TIMEOUT_S: '5' });
  const socks = await openMany(c, 'alice', 6);
  // Workers are in the primary's process group: signal them too, as a terminal's Ctrl-C would.
  const pids = Object.keys((await c.get('/api/v1/stats')).body.connections_by_worker).map(Number);
  for (const pid of [c.proc.pid!, ...pids]) process.kill(pid, 'SIGINT');
  t.same(await c.exited, { code: 0, signal: null });
  for (const s of socks) t.equal((await s.closed).code, 1001);
});

void t.test('readiness fails while a worker is missing', async (t) => {
  const c = await startCluster({ WORKERS: '2' });
  t.teardown(() => c.stop('SIGKILL'));
  const pids = Object.keys((await c.get('/api/v1/stats')).body.connections_by_worker).map(Number);
  process.kill(pids[0]!, 'SIGKILL');
  await until(async () => (await c.get('/readyz')).status === 503, 5000, 'readyz 503');
  t.equal((await c.get('/healthz')).status, 200, 'the surviving worker is still healthy');
  await until(async () => (await c.get('/readyz')).status === 200, 15_000, 'readyz 200 again');
  t.pass('readiness recovered after the replacement');
});

void t.test('kill -9 of the primary: the workers close their sockets with 1001, then exit', async (t) => {
  const c = await startCluster({ SHUTDOWN_TIMEOUT_S: '10' });
  const socks = await openMany(c, 'alice', 10);
  const pids = c.workerPids();
  t.equal(pids.length, 2);
  const started = Date.now();
  process.kill(c.proc.pid!, 'SIGKILL');
  for (const s of socks) t.same(await s.closed, { code: 1001, reason: 'Server shutdown' }, 'a close code, not 1006');
  await until(() => pids.every((p) => {
    try {
      process.kill(p, 0);
      return false;
    } catch {
      return true;
    }
  }), 5000, 'the workers to exit');
  t.ok(Date.now() - started < 5000, `workers gone ${Date.now() - started} ms after the primary`);
});

void t.test('creator ids such as constructor, toString and __proto__ are counted like any other', async (t) => {
  const c = await startCluster();
  t.teardown(() => c.stop('SIGKILL'));
  const ids = ['constructor', 'toString', '__proto__', 'hasOwnProperty'];
  const socks = (await Promise.all(ids.map((id) => openMany(c, id, 3)))).flat();
  const res = await fetch(`http://127.0.0.1:${c.port}/api/v1/stats`);
  const body = JSON.parse(await res.text()) as { total_connections: number; connections_by_creator: Record<string, unknown> };
  t.equal(body.total_connections, 12);
  t.same(Object.entries(body.connections_by_creator).sort(), ids.map((id) => [id, 3]).sort(), 'each id with its count, nothing else');
  socks.forEach((s) => s.close());
});
