/**
 * The servers under test, each started fresh on a free port as a child
 * process tree: the gateway (dist/main.js), the bare-uWS baseline and the
 * `ws` baseline, all with the same number of workers.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createSigner } from 'fast-jwt';
import { freePort } from '../../test/helpers/net.js';
import { reap } from '../../test/helpers/reaper.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SECRET = 'bench-secret-0123456789abcdef';
const sign = createSigner({ key: SECRET, algorithm: 'HS256', expiresIn: 24 * 3600_000 });
export const widgetToken = (creator: string): string => sign({ creator_id: creator });
export const serviceToken = (): string => sign({ scope: 'publish' });

export type TargetName = 'gateway' | 'uws' | 'ws';

export interface Target {
  name: string;
  port: number;
  proc: ChildProcess;
  stop(): Promise<void>;
}

/**
 * The tests' free-port finder: below the kernel's ephemeral range, where none of the
 * benchmark's own (up to 100,000) client sockets can take the port between the check
 * and the server's listen.
 */
export { freePort };

// BENCH_NODE_ARGS, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof", profiles every server's processes (the baselines' too, to compare).
// Every server can be told to collect its garbage (SIGUSR2) before RSS is read: lib/gc-preload.cjs.
const NODE_ARGS = ['--expose-gc', '--require', path.join(ROOT, 'bench/lib/gc-preload.cjs'), ...(process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean)];
// The baselines' workers get the gateway workers' V8 flags themselves (baselines/cluster.ts: WORKER_SEMI_SPACE_MB, WORKER_GC), so the ratios compare code, not V8 settings.
const BASELINE_ARGS = [...NODE_ARGS, '--import', 'tsx'];
const COMMANDS: Record<TargetName, string[]> = {
  // BENCH_GATEWAY_MAIN: another build to measure (e.g. an older commit's dist/main.js, for a before/after figure).
  gateway: [...NODE_ARGS, process.env.BENCH_GATEWAY_MAIN ?? path.join(ROOT, 'dist/main.js')],
  uws: [...BASELINE_ARGS, path.join(ROOT, 'bench/baselines/uws-bare.ts')],
  ws: [...BASELINE_ARGS, path.join(ROOT, 'bench/baselines/ws-server.ts')],
};

/**
 * Starts a server on a free port and waits until it answers. `o.wrap`: a
 * command to run it under (bench/instructions.ts: valgrind), with as long
 * as `o.startMs` to come up.
 */
export async function startTarget(name: TargetName, workers: number, env: Record<string, string> = {}, label: string = name, o: { wrap?: string[]; startMs?: number } = {}): Promise<Target> {
  const port = await freePort();
  const [command, ...args] = [...(o.wrap ?? []), process.execPath, ...COMMANDS[name]];
  const proc = spawn(command!, args, {
    cwd: ROOT,
    env: {
      ...process.env,
      PORT: String(port),
      HOST: '0.0.0.0',
      WORKERS: String(workers),
      JWT_SECRET: SECRET,
      LOG_LEVEL: 'warn',
      // Benchmarks measure throughput, not the abuse limits.
      RATE_LIMIT_MESSAGES: '1000000',
      RATE_LIMIT_WINDOW_S: '1',
      FRAME_RATE_LIMIT: '0',
      CONNECT_RATE_PER_IP: '0',
      // The validation scenario sends 60 KiB messages.
      MAX_MESSAGE_CHARS: '1000000',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  // Dies with the benchmark, however it ends (a smoke run killed at its time-out left gateways running).
  proc.once('exit', reap(proc.pid!));
  const health = name === 'gateway' ? '/readyz' : '/healthz';
  // A server that fails exits (seen at once); a slow one on a loaded machine (the test suite runs the smoke beside other files) gets a minute.
  const end = Date.now() + (o.startMs ?? 60_000);
  for (;;) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}${health}`)).status === 200) break;
    } catch {
      /* not yet */
    }
    if (Date.now() > end || proc.exitCode !== null) throw new Error(`${label} did not start`);
    await new Promise((r) => setTimeout(r, 100));
  }
  // Let every worker bind (SO_REUSEPORT): a worker that binds late would miss connections.
  await new Promise((r) => setTimeout(r, 300));
  return {
    name: label,
    port,
    proc,
    async stop() {
      if (proc.exitCode !== null) return;
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(t);
    },
  };
}

/**
 * The mock AI engine (lib/mock-engine.ts) in its own process on a free port,
 * configured by `env` (DELAY_MS, PIECES, PIECE_MS); it dies with the benchmark.
 */
export async function startMockEngine(env: Record<string, string>): Promise<{ url: string; proc: ChildProcess }> {
  const port = await freePort();
  const proc = fork(path.join(ROOT, 'bench/lib/mock-engine.ts'), { execArgv: ['--import', 'tsx'], env: { ...process.env, PORT: String(port), ...env } });
  proc.once('exit', reap(proc.pid!));
  await new Promise((r) => proc.once('message', r));
  return { url: `http://127.0.0.1:${port}/answer`, proc };
}

export const widgetPath = (creator: string): string => `/api/v1/channels/widget/${creator}/connect?token=${widgetToken(creator)}`;
