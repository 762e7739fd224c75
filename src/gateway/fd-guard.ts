/**
 * Keeps a worker under its file-descriptor limit, whatever holds the
 * descriptors.
 *
 * MAX_CONNECTIONS counts the sockets the gateway knows of (open, pending,
 * refused), but uWS v20.30 gives JavaScript no hook for a TCP connection
 * that has not sent a request yet: 1,000 idle connects, each holding a
 * descriptor until uWS's 10 s HTTP idle time-out, took a worker to its limit,
 * and at the limit uSockets' accept loop spins on EMFILE (100% CPU, new
 * clients waiting 8-13 s). So the guard counts the process's descriptors
 * themselves (/proc/self/fd, read off the event loop), more often as they
 * near the limit (countFds), and:
 *   - at `limit - FD_RESERVE` it tells the upgrade path to refuse new sockets
 *     with HTTP 503 and close the connection at once (the descriptor is freed
 *     now, not after a close handshake a hostile client never completes);
 *   - at `limit - FD_RESERVE / 2` it stops accepting: the listen socket is
 *     closed (the kernel sends connects to the other workers on the port, or
 *     refuses them), so EMFILE is never reached, or left within one check if
 *     a burst got there between two checks;
 *   - once back under `limit - FD_RESERVE` it listens again.
 */
import { readdir, stat } from 'node:fs/promises';
import { FD_RESERVE, fileDescriptorLimit } from '../config/index.js';
import type { Logger } from '../observability/log.js';

export interface FdGuardHooks {
  /** Stop accepting connections (close the listen socket). */
  pause(): void;
  /** Accept again (listen on the same address). */
  resume(): Promise<void>;
}

export type FdState = 'ok' | 'refusing' | 'paused';

export class FdGuard {
  readonly limit: number | undefined;
  #open = 0;
  #state: FdState = 'ok';
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  /** Times accepting was paused (a metric). */
  pauses = 0;

  constructor(
    private readonly hooks: FdGuardHooks,
    private readonly log: Logger,
    limit = fileDescriptorLimit(),
    private readonly count: () => Promise<number> = countFds,
  ) {
    this.limit = limit;
  }

  /** Descriptors open at the last check. */
  get open(): number {
    return this.#open;
  }

  get state(): FdState {
    return this.#state;
  }

  /** New sockets are refused at the HTTP level (503, connection closed). */
  get refusing(): boolean {
    return this.#state !== 'ok';
  }

  start(): void {
    if (this.limit === undefined) return;
    void this.#check();
  }

  async #check(): Promise<void> {
    if (this.#stopped || this.limit === undefined) return;
    try {
      this.#open = await this.count();
    } catch {
      // EMFILE itself can fail the read: treat as full.
      this.#open = this.limit;
    }
    if (this.#stopped) return;
    const free = this.limit - this.#open;
    const was = this.#state;
    if (free <= FD_RESERVE / 2) {
      if (was !== 'paused') {
        this.#state = 'paused';
        this.pauses++;
        this.hooks.pause();
        this.log.warn({ open: this.#open, limit: this.limit }, 'near the file-descriptor limit: not accepting connections until some close');
      }
    } else if (free <= FD_RESERVE) {
      if (was === 'ok') this.#state = 'refusing';
    } else if (was !== 'ok') {
      if (was === 'paused') {
        try {
          await this.hooks.resume();
          this.log.info({ open: this.#open, limit: this.limit }, 'accepting connections again');
        } catch (err) {
          this.log.error({ err: (err as Error).message }, 'could not listen again; retrying');
          this.#schedule(250);
          return;
        }
      }
      this.#state = 'ok';
    }
    // Check more often the closer the limit is.
    const used = this.#open / this.limit;
    this.#schedule(used < 0.5 ? 1000 : used < 0.8 ? 250 : 50);
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => void this.#check(), ms);
    this.#timer.unref();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }
}

/**
 * The descriptors this process holds. Linux 6.2 and later give the number
 * as the size of /proc/self/fd (a bit count in the kernel); earlier kernels
 * say 0 there, and the directory is listed instead. Listing costs in
 * proportion to the descriptors (a dentry and a JS string each: at 15,000
 * connections a worker spent 3% of a connect storm's CPU listing it every
 * 250 ms).
 */
export async function countFds(): Promise<number> {
  const { size } = await stat('/proc/self/fd');
  return size > 0 ? size : (await readdir('/proc/self/fd')).length;
}
