/** What the multi-host suites (one Redis, Redis Cluster, Sentinel) do to a running gateway host. */
import type { Test } from 'tap';
import type { RunningCluster } from './cluster.js';
import { Client, connectWidget } from './client.js';
import { serviceToken, widgetToken } from './tokens.js';
import { sleep } from './net.js';

/** `n` widget sockets of `creator` on the host. */
export function open(c: RunningCluster, creator: string, n: number): Promise<Client[]> {
  return Promise.all(Array.from({ length: n }, () => connectWidget(c.port, creator, widgetToken(creator))));
}

/** A POST to the host's HTTP API with a service token. */
export function post(c: RunningCluster, path: string, body: unknown): Promise<Response> {
  return fetch(`http://127.0.0.1:${c.port}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${serviceToken()}` },
    body: JSON.stringify(body),
  });
}

/** The host's /api/v1/stats. */
export async function stats(c: RunningCluster) {
  return (await c.get('/api/v1/stats')).body;
}

/** Every client gets `frame` next, and nothing more within 150 ms. */
export async function exactlyOnce(t: Test, clients: Client[], frame: object): Promise<void> {
  for (const x of clients) t.same(await x.next(), frame);
  await sleep(150);
  t.ok(clients.every((x) => x.inbox.length === 0), 'exactly once');
}
