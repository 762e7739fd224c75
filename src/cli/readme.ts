/**
 * The README's reference tables, generated from the code that defines them:
 * the configuration table (config/variables.ts), the close codes
 * (protocol/close-codes.ts), the error codes (errors.ts), the error frame
 * texts (protocol/frames.ts) and the metrics (observability/metrics.ts).
 *
 *   make docs     rewrites the marked sections of README.md in place
 *
 * Each section sits between `<!-- generated:NAME -->` and
 * `<!-- /generated:NAME -->`; test/docs.test.ts fails when the README and
 * the code disagree.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { GROUPS, VARIABLES, type Variable } from '../config/variables.js';
import { CLOSE } from '../protocol/close-codes.js';
import { ERROR_CODES } from '../errors.js';
import { ERROR_DOCS, ERRORS } from '../protocol/frames.js';
import { describeMetrics } from '../observability/metrics.js';

const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function config(): string {
  const out: string[] = [];
  for (const [group, title] of Object.entries(GROUPS)) {
    const rows = Object.entries(VARIABLES as Record<string, Variable<unknown>>).filter(([, v]) => v.group === group);
    if (rows.length === 0) continue;
    out.push(`**${title}**`, '', '| variable | default | meaning |', '|---|---|---|');
    for (const [name, v] of rows) {
      const def = v.shown ?? (v.def === '' ? 'unset' : v.def);
      out.push(`| \`${name}\` | ${cell(def)} | ${cell(v.doc)}${v.secret ? ' (secret: never logged or echoed)' : ''} |`);
    }
    out.push('');
  }
  return out.join('\n').trimEnd();
}

function closeCodes(): string {
  const rows = Object.values(CLOSE)
    .sort((a, b) => a.code - b.code)
    .map((c) => `| ${c.code} | ${c.reason || '(none)'} | ${c.advice} | ${cell(c.meaning)} |`);
  return ['| code | reason | reconnect? | meaning |', '|---|---|---|---|', ...rows].join('\n');
}

function errorCodes(): string {
  return ['| code | meaning |', '|---|---|', ...Object.entries(ERROR_CODES).map(([k, v]) => `| \`${k}\` | ${cell(v)} |`)].join('\n');
}

function errorFrames(): string {
  const rows = (Object.keys(ERRORS) as Array<keyof typeof ERRORS>).map((k) => `| \`${ERRORS[k]}\` | ${cell(ERROR_DOCS[k])} |`);
  return ['| error text | when |', '|---|---|', ...rows, '| `Unknown message type: X` | `type` is a string the gateway does not know (X is cut to 64 characters) |'].join('\n');
}

function metrics(): string {
  const all = describeMetrics();
  const rows = all
    .filter((m) => m.name.startsWith('gateway_'))
    .map((m) => `| \`${m.name}\` | ${m.type} | ${m.labels.length ? m.labels.map((l) => `\`${l}\``).join(', ') : '-'} | ${cell(m.help)} |`);
  const runtime = all.filter((m) => !m.name.startsWith('gateway_')).map((m) => `\`${m.name}\``);
  rows.push(`| ${runtime.join(', ')} | (prom-client's default collectors) | \`worker\` | the process and runtime of each worker: CPU, resident memory, heap and heap spaces, GC, handles, event-loop lag |`);
  return ['| metric | type | labels | meaning |', '|---|---|---|---|', ...rows].join('\n');
}

export const SECTIONS: Record<string, () => string> = {
  config,
  'close-codes': closeCodes,
  'error-codes': errorCodes,
  'error-frames': errorFrames,
  metrics,
};

/** `readme` with every generated section replaced by what the code says now. */
export function render(readme: string): string {
  let out = readme;
  for (const [name, gen] of Object.entries(SECTIONS)) {
    const open = `<!-- generated:${name} -->`;
    const close = `<!-- /generated:${name} -->`;
    const a = out.indexOf(open);
    const b = out.indexOf(close);
    if (a < 0 || b < a) throw new Error(`README.md has no ${open} ... ${close} section`);
    out = `${out.slice(0, a + open.length)}\n${gen()}\n${out.slice(b)}`;
  }
  return out;
}

export const README = fileURLToPath(new URL('../../README.md', import.meta.url));

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const before = readFileSync(README, 'utf8');
  const after = render(before);
  if (after !== before) writeFileSync(README, after);
  process.stdout.write(after === before ? 'README.md is up to date\n' : 'README.md reference tables rewritten\n');
}
