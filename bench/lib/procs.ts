/** CPU time and RSS of a process and its descendants, from /proc (Linux). */
import { readFileSync, readdirSync } from 'node:fs';

const TICK_MS = 10; // USER_HZ is 100 on Linux

function stat(pid: number): { ppid: number; cpuMs: number; rssKiB: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    const rssPages = Number(f[21]);
    return { ppid: Number(f[1]), cpuMs: (Number(f[11]) + Number(f[12])) * TICK_MS, rssKiB: rssPages * 4 };
  } catch {
    return undefined;
  }
}

/** `root` and every descendant. */
export function tree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    const pid = Number(d);
    if (!Number.isInteger(pid)) continue;
    const s = stat(pid);
    if (!s) continue;
    const list = children.get(s.ppid) ?? [];
    list.push(pid);
    children.set(s.ppid, list);
  }
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(root);
  return out;
}

export interface Usage {
  cpuMs: number;
  rssKiB: number;
}

export function usage(root: number): Usage {
  let cpuMs = 0;
  let rssKiB = 0;
  for (const pid of tree(root)) {
    const s = stat(pid);
    if (!s) continue;
    cpuMs += s.cpuMs;
    rssKiB += s.rssKiB;
  }
  return { cpuMs, rssKiB };
}

/** One process's own RSS (its children not counted). */
export function rssKiB(pid: number): number {
  return stat(pid)?.rssKiB ?? NaN;
}

/**
 * RSS of `root` and its descendants after a full garbage collection in each
 * (servers started by lib/targets.ts collect on SIGUSR2), `settleMs` later:
 * a figure that does not depend on when V8 last collected.
 */
export async function settledRssKiB(root: number, settleMs = 1000): Promise<number> {
  for (const pid of tree(root)) {
    try {
      process.kill(pid, 'SIGUSR2');
    } catch {
      /* gone */
    }
  }
  await new Promise((r) => setTimeout(r, settleMs));
  return usage(root).rssKiB;
}
