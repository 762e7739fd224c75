/**
 * The servers a test file starts (redis-servers, sentinels, HAProxy,
 * gateway clusters) die with it, however it ends. Its teardown stops them; but when
 * tap kills a file that ran past its time-out (SIGALRM, then SIGKILL 500 ms
 * later), no teardown runs, and they used to live on, orphaned, taking CPU
 * and ports from the files after it. signal-exit (the module tap itself uses
 * for that SIGALRM) runs the handler below on any exit or fatal signal:
 * every child still running gets SIGKILL.
 */
import { onExit } from 'signal-exit';

/** Pids, or negative for a whole process group (a gateway cluster: primary and workers). */
const live = new Set<number>();

onExit(() => {
  for (const pid of live) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

/** Kills `pid` (a negative pid: its process group) if this process exits first; the returned function forgets it (call it when the child has exited). */
export function reap(pid: number): () => void {
  live.add(pid);
  return () => live.delete(pid);
}
