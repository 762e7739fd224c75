/**
 * Instructions per chat message (or per connect), the gateway against bare uWS, counted by
 * valgrind's callgrind: repeatable where seconds are not (this machine is
 * shared and noisy: two rounds of one `make bench` chat comparison differed
 * by 40%, repeats of this count by about 2%), so a change of a few percent
 * can be told from noise.
 *
 * Each server runs one worker under callgrind with instrumentation off. One
 * socket (INSTR_SOCKETS: that many, sharing the messages; widget.v1 unless
 * INSTR_PROTOCOL says otherwise; the echo engine) sends user_messages in a
 * closed loop:
 * INSTR_WARMUP of them, then INSTR_WINDOWS windows of INSTR_MESSAGES each
 * with the worker's instrumentation on, its count zeroed before and read
 * after. The first window is dropped (valgrind translates every function
 * again when instrumentation starts, and the JIT is still settling); the
 * figure is the median of the others (a window that holds a major GC or a
 * recompilation counts several percent more). The servers run as `make
 * bench` runs them (lib/targets.ts: the same flags; the baselines' workers
 * with the gateway workers' V8 flags, baselines/cluster.ts), under valgrind. Only user-space instructions count:
 * not a send's kernel work, nor cycles lost to cache misses; a guide for a
 * change, not a replacement for `make bench`'s ratio of CPU time.
 *
 * With INSTR_PROTOCOL=widget.v2 (the gateway alone: BENCH_TARGETS=gateway),
 * the socket speaks widget.v2 with history on (embedded mode's default):
 * every answer is kept by the primary, so the primary's instructions are
 * counted too, beside the worker's (callgrind counts each process).
 *
 * With INSTR_WORK=connect, a window opens INSTR_MESSAGES authenticated
 * widget.v1 sockets instead (at most 32 handshakes in flight, each counted
 * once its connection_status arrived), closed after the window (their
 * closing is not counted): instructions per connect, the connect storm's
 * work.
 *
 *   node --import tsx bench/instructions.ts          (needs valgrind; about 2 minutes)
 *   INSTR_WORK (chat, or connect), INSTR_PROTOCOL (widget.v1, or widget.v2), INSTR_SOCKETS (1: chat sockets in a closed loop each), INSTR_WARMUP (5000; 20000 for widget.v2), INSTR_MESSAGES (5000), INSTR_WINDOWS (5),
 *   BENCH_TARGETS=gateway (the gateway alone),
 *   INSTR_KEEP=1 (keep the last window's callgrind dump of each server, to see where the instructions go),
 *   BENCH_GATEWAY_MAIN (another build of the gateway, for a before/after figure)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { tree } from './lib/procs.js';
import { fmt, percentiles, ratio } from './lib/stats.js';
import { startTarget, widgetPath, type TargetName } from './lib/targets.js';

const PROTOCOL = process.env.INSTR_PROTOCOL ?? 'widget.v1';
// widget.v2 settles later: bare uWS's count varied by 25% between windows after 5,000 (82,428 against 103,574), by 4% after 20,000.
const WARMUP = Number(process.env.INSTR_WARMUP ?? (PROTOCOL === 'widget.v2' ? 20_000 : 5000));
const MESSAGES = Number(process.env.INSTR_MESSAGES ?? 5000);
const WINDOWS = Number(process.env.INSTR_WINDOWS ?? 5);
const WORK = process.env.INSTR_WORK ?? 'chat';
const KEEP = process.env.INSTR_KEEP === '1';
if (WORK !== 'chat' && WORK !== 'connect') throw new Error(`INSTR_WORK must be chat or connect, not ${WORK}`);
if (PROTOCOL !== 'widget.v1' && PROTOCOL !== 'widget.v2') throw new Error(`INSTR_PROTOCOL must be widget.v1 or widget.v2, not ${PROTOCOL}`);
const V2 = PROTOCOL === 'widget.v2';
const SOCKETS = Math.max(1, Number(process.env.INSTR_SOCKETS ?? 1));
const UNIT = WORK === 'chat' ? 'message' : 'connect';

// vgdb names its pipes after $HOST, the servers' listen address: callgrind_control must see the same.
const HOST = '127.0.0.1';

/** `n` user_messages on one socket, each sent once the previous one's ai_response arrived (INSTR_SOCKETS of these at once). */
function chat(port: number, n: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${widgetPath('instr')}`, V2 ? 'widget.v2' : undefined);
    let left = n;
    ws.on('error', reject);
    ws.on('message', (data) => {
      const type = (JSON.parse(String(data)) as { type: string }).type;
      if (type !== 'connection_status' && type !== 'ai_response') return;
      if (left-- === 0) {
        ws.close();
        resolve();
      } else ws.send('{"type":"user_message","content":"hello there, how are you"}');
    });
  });
}

/** Opens `n` sockets (at most 32 handshakes at a time), each counted once its connection_status arrived; resolves with a function that closes them all. */
async function connect(port: number, n: number): Promise<() => Promise<void>> {
  const open: WebSocket[] = [];
  const one = () =>
    new Promise<void>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}${widgetPath('instr')}`, V2 ? 'widget.v2' : undefined);
      ws.once('error', reject);
      ws.once('message', () => {
        open.push(ws);
        resolve();
      });
    });
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(32, n) }, async () => {
      while (next < n) {
        next++;
        await one();
      }
    }),
  );
  return async () => {
    await Promise.all(open.map((ws) => new Promise((r) => (ws.once('close', r), ws.close()))));
  };
}

/** One window of the work: its count, then what is left to do outside the window. */
async function work(port: number, n: number): Promise<() => Promise<void>> {
  if (WORK === 'connect') return connect(port, n);
  // INSTR_SOCKETS sockets share the window's messages (a busier server: one turn handles several).
  await Promise.all(Array.from({ length: SOCKETS }, (_, i) => chat(port, Math.floor(n / SOCKETS) + (i < n % SOCKETS ? 1 : 0))));
  return async () => {};
}

async function measure(name: TargetName): Promise<number[]> {
  const dir = mkdtempSync(path.join(tmpdir(), 'cgw-instr-'));
  const wrap = ['valgrind', '-q', '--tool=callgrind', '--trace-children=yes', '--instr-atstart=no', `--callgrind-out-file=${dir}/cg.%p`];
  // widget.v2: bare uWS keeps every answer in its primary too (HISTORY_HOP, the floor of embedded history).
  const env: Record<string, string> = V2 && name === 'uws' ? { HOST, HISTORY_HOP: '1' } : { HOST };
  const target = await startTarget(name, 1, env, `${name} under valgrind`, { wrap, startMs: 180_000 });
  try {
    await new Promise((r) => setTimeout(r, 2000)); // the pool's thread, the first requests' compilation
    // The worker; with widget.v2 the primary too (valgrind runs the primary in the process it was started as).
    const counted = [String(tree(target.proc.pid!).at(-1)), ...(V2 ? [String(target.proc.pid)] : [])];
    const control = (pid: string, ...args: string[]) => execFileSync('callgrind_control', [...args, pid], { stdio: 'ignore', env: { ...process.env, HOST } });
    await (await work(target.port, WARMUP))();
    const perUnit: number[] = [];
    for (let w = 0; w <= WINDOWS; w++) {
      for (const f of readdirSync(dir)) if (counted.some((pid) => f.startsWith(`cg.${pid}.`))) rmSync(path.join(dir, f));
      for (const pid of counted) {
        control(pid, '-z');
        control(pid, '-i', 'on');
      }
      const after = await work(target.port, MESSAGES);
      for (const pid of counted) {
        control(pid, '-i', 'off');
        control(pid, '-d');
      }
      await after();
      const each: number[] = [];
      for (const pid of counted) {
        let dump: string | undefined;
        for (let i = 0; i < 100 && dump === undefined; i++) {
          await new Promise((r) => setTimeout(r, 100));
          dump = readdirSync(dir).find((f) => f.startsWith(`cg.${pid}.`));
        }
        const totals = dump && /^totals: (\d+)/m.exec(readFileSync(path.join(dir, dump), 'utf8'));
        if (!totals) throw new Error(`no callgrind dump from ${name}'s process ${pid}`);
        each.push(Number(totals[1]) / MESSAGES);
      }
      const sum = each.reduce((a, b) => a + b, 0);
      if (w > 0) perUnit.push(sum);
      process.stderr.write(`${name} window ${w}${w === 0 ? ' (dropped)' : ''}: ${fmt(sum)} instructions per ${UNIT}${V2 ? ` (worker ${fmt(each[0]!)}, primary ${fmt(each[1]!)})` : ''}\n`);
    }
    return perUnit;
  } finally {
    await target.stop();
    if (KEEP) process.stderr.write(`${name}: the last window's callgrind dump is kept in ${dir} (callgrind_annotate it)\n`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]): number => percentiles(xs).p50;

// BENCH_TARGETS=gateway: the gateway alone (a before/after figure of one change, with BENCH_GATEWAY_MAIN).
const names = (['uws', 'gateway'] as const).filter((n) => (process.env.BENCH_TARGETS ?? 'uws,gateway').split(',').includes(n));
const counts = new Map<TargetName, number[]>();
for (const n of names) counts.set(n, await measure(n));
const bare = counts.get('uws');
console.log(`| server | instructions per ${WORK === 'chat' ? 'chat message' : 'connect'} (user space, one worker${V2 ? ' and the primary, widget.v2 with history' : ''}), by window | median | vs bare uWS |
|---|---|---|---|`);
for (const [n, xs] of counts) console.log(`| ${n} | ${xs.map((x) => fmt(x)).join(' / ')} | ${fmt(median(xs))} | ${bare ? ratio(median(xs), median(bare)) : '-'} |`);
