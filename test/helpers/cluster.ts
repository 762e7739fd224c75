/** The real gateway cluster (`node dist/main.js`) as a child process on a free port. */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, until } from './net.js';
import { reap } from './reaper.js';
import { SECRET } from './tokens.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** GATEWAY_TEST_MAIN: another build to run the suite against (e.g. an older commit, to see a regression test fail). */
export const MAIN = process.env.GATEWAY_TEST_MAIN ?? path.join(ROOT, 'dist/main.js');

export interface RunningCluster {
  port: number;
  proc: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** GET a path, parsed JSON with its status. */
  get(p: string): Promise<{ status: number; body: any }>; // oxlint-disable-line typescript/no-explicit-any -- a test reads any JSON field
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** kill -9 of the whole process group: the host dies without cleaning up. */
  killHost(): Promise<void>;
  /** The workers' process ids, from the primary's log. */
  workerPids(): number[];
}

/**
 * `waitFor`: what start-up waits for: '/readyz' (default) or '/healthz' (every worker serves, the cluster may not be ready).
 * `collectable`: run under --expose-gc with bench/lib/gc-preload.cjs (the workers inherit both): SIGUSR2
 * makes a process of the cluster collect its garbage, so RSS can be read after a full GC.
 */
export async function startCluster(env: Record<string, string> = {}, o: { waitFor?: '/readyz' | '/healthz'; collectable?: boolean } = {}): Promise<RunningCluster> {
  const port = await freePort();
  // GATEWAY_TEST_NOFILE: run under that file-descriptor limit (ulimit -n), as a small box would.
  const nofile = env.GATEWAY_TEST_NOFILE;
  // NODE_OPTIONS: '' runs the cluster without tap's coverage hook (it lazily
  // opens files, which fails in a process out of descriptors): tap rewrites
  // NODE_OPTIONS of every child it spawns, so the shell clears it.
  const plain = env.NODE_OPTIONS === '' ? 'env -u NODE_OPTIONS ' : '';
  const argv = [...(o.collectable ? ['--expose-gc', '--require', path.join(ROOT, 'bench/lib/gc-preload.cjs')] : []), MAIN];
  const [cmd, args] = nofile || plain
    ? ['sh', ['-c', `${nofile ? `ulimit -n ${Number(nofile)} && ` : ''}exec ${plain}"$0" "$@"`, process.execPath, ...argv]]
    : [process.execPath, argv];
  const proc = spawn(cmd, args as string[], {
    env: {
      ...process.env,
      JWT_SECRET: SECRET,
      PORT: String(port),
      HOST: '127.0.0.1',
      WORKERS: '2',
      LOG_LEVEL: 'info',
      // Tests are faster than people: the abuse caps are off unless a test sets them.
      FRAME_RATE_LIMIT: '0',
      CONNECT_RATE_PER_IP: '0',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group, so a test can kill the "host" (primary and workers) at once.
    detached: true,
  });
  // The whole group (primary and workers), until the primary has exited.
  proc.once('exit', reap(-proc.pid!));
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const get = async (p: string) => {
    const res = await fetch(`http://127.0.0.1:${port}${p}`);
    return { status: res.status, body: await res.json() };
  };
  const c: RunningCluster = {
    port,
    proc,
    output: () => out,
    exited,
    get,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) {
        if (signal === 'SIGKILL') killGroup(proc.pid!);
        else proc.kill(signal);
      }
      return exited;
    },
    async killHost() {
      killGroup(proc.pid!);
      await exited;
    },
    workerPids() {
      const live = new Set<number>();
      for (const m of out.matchAll(/"worker_pid":(\d+)[^\n]*"msg":"worker ready"/g)) live.add(Number(m[1]));
      return [...live].filter((p) => {
        try {
          process.kill(p, 0);
          return true;
        } catch {
          return false;
        }
      });
    },
  };
  let dead = false;
  void exited.then(() => (dead = true));
  await until(async () => {
    if (dead) throw new Error(`cluster exited during start-up:\n${out}`);
    if (o.waitFor === '/healthz') return /cluster ready|worker listening[\s\S]*worker listening/.test(out) && (await get('/healthz')).status === 200;
    // The log line too: workerPids() reads the primary's log, which may reach the pipe after /readyz answers.
    return (await get('/readyz')).status === 200 && out.includes('"msg":"cluster ready"');
  }, 20_000, 'cluster ready').catch((err: Error) => {
    proc.kill('SIGKILL');
    // What the cluster said is the only clue to why it never served.
    throw new Error(`${err.message} (port ${port}); its output ended with:\n${out.slice(-3000)}`);
  });
  return c;
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}
