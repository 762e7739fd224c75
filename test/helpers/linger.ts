/**
 * A test file whose tests are all done but whose process does not exit
 * (something it used keeps the event loop alive) would sit until tap's
 * time-out (300 s) and then fail as a whole. `exitWhenDone(t)` gives it
 * `graceMs` after its last test: if the process is still alive then, what
 * keeps it (handles, with socket ports and timer sources) goes to stderr,
 * and it exits with the result its tests gave (tap sets process.exitCode on
 * a failure). Seen once in CI (bus-contract.test.ts, 2026-11-28: every
 * test passed, then the file hung; not reproduced in 30 runs since), so the
 * log says what lingered next time instead of a bare "timeout!".
 */
import type { Test } from 'tap';

export function exitWhenDone(t: Test, graceMs = 15_000): void {
  t.teardown(() => {
    setTimeout(() => {
      const lines = [`# still alive ${graceMs} ms after its tests: ${process.getActiveResourcesInfo().join(', ')}`];
      const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles();
      for (const h of handles) {
        const name = (h as object).constructor?.name;
        if (name === 'Socket') {
          const s = h as { remoteAddress?: string; remotePort?: number; localPort?: number };
          lines.push(`#   socket ${s.remoteAddress ?? '?'}:${s.remotePort ?? '?'} (local ${s.localPort ?? '?'})`);
        } else if (name === 'Timeout') {
          const x = h as { _idleTimeout?: number; _onTimeout?: unknown };
          lines.push(`#   timer ${x._idleTimeout} ms: ${String(x._onTimeout).replace(/\s+/g, ' ').slice(0, 200)}`);
        } else lines.push(`#   ${name}`);
      }
      process.stderr.write(`${lines.join('\n')}\n`);
      process.exit(process.exitCode ?? 0);
    }, graceMs).unref();
  });
}
