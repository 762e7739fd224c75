/** A real redis-server on a free port, started and stopped by the test (no persistence). */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { freePort, until } from './net.js';
import { reap } from './reaper.js';

export interface RedisServer {
  port: number;
  url: string;
  /** The server's process id (undefined before it first started). */
  pid(): number | undefined;
  /** A client for assertions (closed by stop()). */
  client(): Redis;
  /**
   * Every command the server runs from now on, as its arguments (MONITOR on a
   * plain socket: ioredis's monitor() can take a monitor line for the reply
   * to its own ready check, "Command queue state error"). Resolves once the
   * server has acknowledged MONITOR; closed by stop().
   */
  monitor(onCommand: (args: string[]) => void): Promise<{ close(): void }>;
  /** kill -9 the server (the port stays reserved for restart()). */
  kill(): Promise<void>;
  restart(): Promise<void>;
  /** SIGSTOP / SIGCONT: a server that stops answering without closing its connections. */
  pause(): void;
  resume(): void;
  stop(): Promise<void>;
}

/** A real redis-server on a free port; `{ start: false }` only reserves the port (start it with restart()). */
export async function startRedis(o: { start?: boolean; args?: string[]; port?: number } = {}): Promise<RedisServer> {
  const port = o.port ?? (await freePort());
  let proc: ChildProcess | undefined;
  const clients: Redis[] = [];
  const sockets: Socket[] = [];
  // Its own working directory: a replica's full sync writes dump.rdb there even with --save ''.
  const dir = mkdtempSync(path.join(tmpdir(), 'cgw-redis-'));

  async function launch(): Promise<void> {
    proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning', '--enable-debug-command', 'local', '--dir', dir, ...(o.args ?? [])], {
      stdio: 'ignore',
    });
    proc.once('exit', reap(proc.pid!));
    const probe = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on('error', () => {});
    const pid = proc.pid;
    // The server answering must be this one: another process on the port would fool a PING.
    await until(async () => {
      if (proc!.exitCode !== null || proc!.signalCode !== null) throw new Error(`redis-server on ${port} exited (${proc!.exitCode ?? proc!.signalCode}); is the port taken?`);
      try {
        if (probe.status !== 'ready') await probe.connect();
        return /^process_id:(\d+)/m.exec(await probe.info('server'))?.[1] === String(pid);
      } catch {
        probe.disconnect();
        return false;
      }
    }, 10_000, `redis-server (pid ${pid}) on ${port}`);
    probe.disconnect();
  }

  async function kill(): Promise<void> {
    const p = proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await gone;
  }

  if (o.start !== false) await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid: () => proc?.pid,
    client() {
      const c = new Redis({ port, maxRetriesPerRequest: 1 });
      c.on('error', () => {});
      clients.push(c);
      return c;
    },
    monitor(onCommand) {
      return new Promise((resolve, reject) => {
        const sock = connect(port, '127.0.0.1');
        const close = () => sock.destroy();
        sockets.push(sock);
        let buf = '';
        let acked = false;
        sock.setEncoding('latin1');
        sock.once('error', reject);
        sock.on('data', (chunk: string) => {
          buf += chunk;
          let nl: number;
          while ((nl = buf.indexOf('\r\n')) !== -1) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 2);
            if (!acked) {
              if (line !== '+OK') return reject(new Error(`MONITOR answered ${line}`));
              acked = true;
              resolve({ close });
              continue;
            }
            // +<time> [<db> <client>] "<arg>" "<arg>" ... (quotes and bytes escaped inside)
            onCommand([...line.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!));
          }
        });
        sock.write('MONITOR\r\n');
      });
    },
    kill,
    restart: launch,
    pause: () => proc?.kill('SIGSTOP'),
    resume: () => proc?.kill('SIGCONT'),
    async stop() {
      for (const c of clients) c.disconnect();
      for (const s of sockets) s.destroy();
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
