/** Scenario 4, HTTP: broadcast POSTs/s (to a creator with no listeners) and /healthz, with autocannon. */
import autocannon from 'autocannon';
import type { Ctx } from '../lib/context.js';
import { fmt, ratio } from '../lib/stats.js';
import { serviceToken, startTarget } from '../lib/targets.js';
import type { Table } from '../lib/report.js';

function cannon(opts: autocannon.Options): Promise<autocannon.Result> {
  return new Promise((resolve, reject) => autocannon(opts, (err, res) => (err ? reject(err) : resolve(res))));
}

export async function run(ctx: Ctx): Promise<Table> {
  const rows: string[][] = [];
  const base: Record<string, number> = {};
  for (const name of ctx.targets) {
    const target = await startTarget(name, ctx.workers);
    try {
      for (const [label, opts] of [
        ['GET /healthz', { url: `http://127.0.0.1:${target.port}/healthz` }],
        [
          'POST broadcast',
          {
            url: `http://127.0.0.1:${target.port}/api/v1/creators/nobody/broadcast`,
            method: 'POST',
            headers: { authorization: `Bearer ${serviceToken()}`, 'content-type': 'application/json' },
            body: '{"type":"announcement","text":"hello"}',
          },
        ],
      ] as const) {
        const cpu0 = process.cpuUsage();
        const r = await cannon({ connections: 64, duration: Math.max(2, ctx.durationMs / 2000), ...(opts as { url: string }) });
        const cpu = process.cpuUsage(cpu0);
        const rps = r.requests.average;
        const key = `${label}`;
        if (name === 'uws') base[key] = rps;
        rows.push([name, label, fmt(rps), ratio(rps, base[key] ?? NaN), fmt(r.latency.p50, 1), fmt(r.latency.p99, 1), fmt(r.non2xx), ((cpu.user + cpu.system) / 1000 / (r.duration * 1000)).toFixed(2)]);
        process.stderr.write(`http ${name} ${label}: ${fmt(rps)} req/s\n`);
      }
    } finally {
      await target.stop();
    }
  }
  return {
    title: 'HTTP endpoints (autocannon)',
    method: '64 connections, autocannon in the runner process. The broadcast goes to a creator with no listeners, so this measures the HTTP path: token check, body read and parse, publish.',
    columns: ['server', 'request', 'requests/s', 'vs uWS', 'p50 ms', 'p99 ms', 'non-2xx', 'load CPU (cores)'],
    rows,
    notes: [],
  };
}
