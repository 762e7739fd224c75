import net from 'node:net';
import { mkdirSync, openSync, closeSync, readFileSync, writeSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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

/**
 * Ports are reserved across the suite's processes (tap runs files side by
 * side), not only in this one: a test that kills a redis-server and restarts
 * it on the same port leaves that port free meanwhile, and another file's
 * freePort() could hand it to its own server, which the first test's
 * gateway would then reconnect to. A reservation is a file named after the
 * port holding the owner's pid, made with O_EXCL; one whose owner is dead is
 * taken over, and this process removes its own when it exits.
 */
const LOCKS = join(tmpdir(), 'channel-gateway-test-ports');
mkdirSync(LOCKS, { recursive: true });
/** Ports this process reserved (their files are removed when it exits). */
const held = new Set<number>();
process.once('exit', () => {
  for (const port of held) {
    try {
      if (readFileSync(join(LOCKS, String(port)), 'utf8') === String(process.pid)) unlinkSync(join(LOCKS, String(port)));
    } catch {
      /* already gone */
    }
  }
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Reserves `port` for this process; false when a live process holds it (exported for its test). */
export function reserve(port: number): boolean {
  const file = join(LOCKS, String(port));
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      held.add(port);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      let owner = NaN;
      try {
        owner = Number(readFileSync(file, 'utf8'));
      } catch {
        continue; // removed meanwhile: try again
      }
      // An owner still writing its pid (empty file) counts as alive.
      if (!Number.isInteger(owner) || owner <= 0 || owner === process.pid || alive(owner)) return false;
      try {
        unlinkSync(file);
      } catch {
        /* another process took it over first */
      }
    }
  }
  return false;
}

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
    if (given.has(port) || !reserve(port)) continue;
    given.add(port);
    if ((await canListen(port, host)) === port) return port;
  }
  for (let i = 0; i < 50; i++) {
    const port = await canListen(0, host);
    if (port === undefined) break;
    if (given.has(port) || !reserve(port)) continue;
    given.add(port);
    return port;
  }
  throw new Error(`no free port on ${host}`);
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
