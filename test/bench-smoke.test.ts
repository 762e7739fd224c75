/**
 * The benchmark suite runs: every scenario, tiny, against the gateway and
 * bare uWS, writing a results file. (Figures come from `make bench`; this
 * only guards the benchmark code itself.)
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ROOT } from './helpers/cluster.js';

// Every scenario starts its servers several times: about 115 s alone (most of it waiting for
// servers to start and settle), up to 280 s beside the suite's other files on 2 cores, so more than tap's 300 s default.
t.setTimeout(480_000);

void t.test('bench/run.ts runs every scenario and writes the results file', async (t) => {
  const out = path.join(mkdtempSync(path.join(tmpdir(), 'cgw-bench-')), 'RESULTS.md');
  const env = {
    ...process.env,
    BENCH_SMOKE: '1',
    BENCH_DURATION_S: '0.5',
    BENCH_WARMUP_S: '0.1',
    BENCH_TARGETS: 'uws,gateway',
    BENCH_CHAT_CONNS: '10',
    BENCH_FANOUT_SUBS: '20',
    BENCH_FANOUT_DELIVERIES: '400',
    BENCH_STORM_N: '200',
    BENCH_SLOW_SESSIONS: '20',
    BENCH_SLOW_THINK_MS: '100',
    BENCH_VALIDATION_CONNS: '5',
    BENCH_LIMITS_CONNS: '5',
    BENCH_OUT: out,
  };
  // env -u: tap's coverage loaders must not ride along into the benchmark's processes.
  execFileSync('env', ['-u', 'NODE_OPTIONS', process.execPath, '--import', 'tsx', 'bench/run.ts'], { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'], timeout: 450_000 });
  const md = readFileSync(out, 'utf8');
  for (const title of ['Chat', 'Fan-out', 'Connect storm', 'HTTP endpoints', 'Slow AI engine', 'Cross-host fan-out', 'Validation', 'Rate limits and msgpack', 'Nothing lost', 'Streamed answers', 'Capacity']) {
    t.match(md, `### ${title}`, title);
  }
  t.notMatch(md, /FAILED/, 'no scenario failed');
  t.match(md, /\| gateway \| 10 \| [\d,]+ \| \d\.\d\dx/, 'gateway chat figures with a ratio against bare uWS');
  t.match(md, /## Machine\n- CPU: .+, \d+ cores/);
});
