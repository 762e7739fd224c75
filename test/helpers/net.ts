import net from 'node:net';
import { readFileSync } from 'node:fs';

/**
 * Where test servers listen: below the kernel's ephemeral range, from which
 * every outgoing connection takes its local port. A port from that range
 * (what listen(0) gives) can be taken by one of the suite's thousands of
 * client sockets between the check and the server's own listen, and the
 * server then cannot listen on it at all.
 */
function listenRange(): [number, number] | undefined {
  try {
    const [lo] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    return lo !== undefined && lo > 12_000 ? [10_000, lo - 1] : undefined;
  } catch {
    return undefined;
  }
}
const RANGE = listenRange();
/** Ports this process handed out: never twice. */
const given = new Set<number>();

function canListen(port: number, host: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', () => resolve(undefined));
    srv.listen(port, host, () => {
      const { port: got } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(got));
    });
  });
}

/** A port that was free a moment ago (SO_REUSEPORT makes reuse dangerous: always take a fresh one). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let i = 0; RANGE && i < 50; i++) {
    const port = RANGE[0] + Math.floor(Math.random() * (RANGE[1] - RANGE[0] + 1));
    if (given.has(port)) continue;
    if ((await canListen(port, host)) === port) {
      given.add(port);
      return port;
    }
  }
  const port = await canListen(0, host);
  if (port === undefined) throw new Error(`no free port on ${host}`);
  return port;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes. */
export async function until<T>(fn: () => T | Promise<T>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await sleep(50);
  }
}
