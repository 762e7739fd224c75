/**
 * Where a callgrind dump's instructions go, JavaScript functions named:
 * callgrind cannot name the JIT's code (it shows `???:0x...`), but V8 writes
 * every function's code range to /tmp/perf-<pid>.map when started with
 * `--perf-basic-prof`, and this tool puts the names back.
 *
 *   BENCH_NODE_ARGS=--perf-basic-prof INSTR_KEEP=1 node --import tsx bench/instructions.ts
 *   node --import tsx bench/annotate.ts /tmp/cgw-instr-XXXX/cg.<pid>.<n> [top]
 *   node --import tsx bench/annotate.ts <dump> --callers <function name part>
 *   node --import tsx bench/annotate.ts <dump> --diff <another dump>
 *
 * The first form lists the functions by self instructions (per message when
 * INSTR_MESSAGES, 5,000 by default, says how many the window counted); the
 * second who calls a function (a V8 builtin such as Builtins_LoadIC, or a
 * runtime function such as ComputeAndSetRawHash), its callers named; the
 * third sets two dumps side by side, the largest differences first (the
 * gateway's worker beside bare uWS's). Needs callgrind_annotate (Debian's
 * valgrind). Code that V8 moved or freed after the map named it may be
 * misnamed: read it as a guide, as the counts themselves.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

const MESSAGES = Number(process.env.INSTR_MESSAGES ?? 5000);

type Range = [start: number, size: number, name: string];

/** The perf map of the process a dump came from (its name holds the pid: cg.<pid>[.<n>]). */
function mapOf(dump: string): Range[] {
  const pid = path.basename(dump).split('.')[1];
  const file = `/tmp/perf-${pid}.map`;
  if (!existsSync(file)) {
    console.error(`no ${file}: JavaScript functions stay unnamed (start the servers with BENCH_NODE_ARGS=--perf-basic-prof)`);
    return [];
  }
  return readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l): Range => {
      const [start, size, ...name] = l.split(' ');
      return [parseInt(start!, 16), parseInt(size!, 16), name.join(' ')];
    })
    .sort((a, b) => a[0] - b[0]);
}

/** Replaces every `???:0x<address> [???]` with the JavaScript function whose code holds it. */
function namer(ranges: Range[]): (text: string) => string {
  const find = (addr: number): string | undefined => {
    let lo = 0;
    let hi = ranges.length - 1;
    let at = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (ranges[mid]![0] <= addr) {
        at = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    const r = ranges[at];
    return r && addr < r[0] + r[1] ? r[2] : undefined;
  };
  return (text) => text.replace(/\?\?\?:0x([0-9a-f]+) \[\?\?\?\]/g, (all, addr: string) => find(parseInt(addr, 16)) ?? all);
}

function annotate(dump: string, ...args: string[]): string {
  return execFileSync('callgrind_annotate', ['--inclusive=no', '--threshold=100', ...args, dump], { maxBuffer: 1 << 28 }).toString();
}

/** Self instructions by function, named; and the total. */
function selfCounts(dump: string): { total: number; by: Map<string, number> } {
  const name = namer(mapOf(dump));
  const by = new Map<string, number>();
  let total = 0;
  for (const line of annotate(dump).split('\n')) {
    const m = /^\s*([\d,]+) \([ \d.]+%\)\s+(.*)$/.exec(line);
    if (!m) continue;
    const n = Number(m[1]!.replace(/,/g, ''));
    if (m[2]!.startsWith('PROGRAM TOTALS')) {
      total = n;
      continue;
    }
    // Without arguments and library: overloads and clones of one function count as one.
    const fn = name(m[2]!)
      .replace(/^(\?\?\?:|JS:)/, '')
      .replaceAll('(anonymous namespace)', '{anonymous}')
      .replace(/\(.*$/, '')
      .replace(/ \[.*$/, '');
    by.set(fn, (by.get(fn) ?? 0) + n);
  }
  return { total, by };
}

const perMessage = (n: number): string => (n / MESSAGES).toFixed(0).padStart(8);

const [dump, mode, arg] = process.argv.slice(2);
if (dump === undefined || !existsSync(dump)) {
  console.error('usage: bench/annotate.ts <callgrind dump> [top | --callers <name part> | --diff <dump>]');
  process.exit(2);
}
if (mode === '--callers') {
  // callgrind_annotate's caller tree: a block per function, its callers (`<`) above its line (`*`).
  const name = namer(mapOf(dump));
  for (const block of annotate(dump, '--tree=caller').split('\n\n')) {
    if (block.split('\n').some((l) => l.includes('*') && l.includes(arg ?? ''))) console.log(`${name(block)}\n`);
  }
} else if (mode === '--diff') {
  const a = selfCounts(dump);
  const b = selfCounts(arg!);
  console.log(`per message (INSTR_MESSAGES=${MESSAGES}): ${perMessage(a.total)} against ${perMessage(b.total)}`);
  const rows = [...new Set([...a.by.keys(), ...b.by.keys()])].map((k) => [k, a.by.get(k) ?? 0, b.by.get(k) ?? 0] as const).sort((x, y) => y[1] - y[2] - (x[1] - x[2]));
  for (const [k, x, y] of rows.slice(0, 60)) console.log(`${perMessage(x)} ${perMessage(y)} ${perMessage(x - y)}  ${k}`);
} else {
  const { total, by } = selfCounts(dump);
  console.log(`per message (INSTR_MESSAGES=${MESSAGES}): ${perMessage(total)}`);
  for (const [k, n] of [...by].sort((x, y) => y[1] - x[1]).slice(0, Number(mode ?? 50))) console.log(`${perMessage(n)} ${((100 * n) / total).toFixed(2).padStart(6)}%  ${k}`);
}
