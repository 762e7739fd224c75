/**
 * deploy/grafana-dashboard.json: every query names metrics the gateway
 * exports (a renamed metric breaks this test, not an operator's dashboard),
 * and every exported gateway_* family is on it.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describeMetrics } from '../src/observability/metrics.js';
import { ROOT } from './helpers/cluster.js';

const dashboard = JSON.parse(readFileSync(path.join(ROOT, 'deploy/grafana-dashboard.json'), 'utf8')) as {
  panels: Array<{ title: string; targets: Array<{ expr: string }> }>;
};
const exported = new Set<string>();
for (const m of describeMetrics()) {
  exported.add(m.name);
  if (m.type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) exported.add(m.name + suffix);
}
const PROMQL = new Set(['sum', 'by', 'rate', 'max', 'min', 'histogram_quantile', 'le', 'avg', 'irate', 'increase', 'without', 'on']);

void t.test('every query names an exported metric, and only exported metrics', async (t) => {
  const used = new Set<string>();
  for (const p of dashboard.panels) {
    t.ok(p.targets.length > 0, `${p.title} has a query`);
    for (const { expr } of p.targets) {
      // Metric names: identifiers not inside {} or (by ...) label lists, not PromQL words.
      const names = expr
        .replace(/\{[^}]*\}/g, '')
        .replace(/\bby \([^)]*\)/g, '')
        .replace(/\[[^\]]*\]/g, '')
        .match(/[a-z_][a-z0-9_]*/g)!
        .filter((w) => !PROMQL.has(w) && !/^\d/.test(w));
      t.ok(names.length > 0, `${p.title}: ${expr}`);
      for (const n of names) {
        t.ok(exported.has(n), `${p.title}: ${n} is exported`);
        used.add(n.replace(/_(bucket|sum|count)$/, ''));
      }
    }
  }
  const missing = [...exported].filter((n) => n.startsWith('gateway_') && !n.endsWith('_bucket') && !n.endsWith('_sum') && !n.endsWith('_count') && !used.has(n));
  t.same(missing, [], 'every gateway_* family has a panel');
});
