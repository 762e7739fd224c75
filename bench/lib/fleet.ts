/**
 * The load side: several loadgen processes, each with its own source
 * addresses (ADDRS_PER_PROC of 127.0.0.x), driven together. A command goes to every process
 * and resolves with all their answers.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { reap } from '../../test/helpers/reaper.js';

/** Source addresses per load process: 8 x ~28k ephemeral ports. */
export const ADDRS_PER_PROC = 8;
const LOADGEN = fileURLToPath(new URL('./loadgen.ts', import.meta.url));

export class Fleet {
  readonly procs: ChildProcess[] = [];
  #id = 1;
  /** Per broadcast sequence number: how many processes have delivered it to all their connections. */
  readonly #seqDone = new Map<number, number>();
  #seqWaiters = new Map<number, () => void>();
  readonly #seqComplete = new Set<number>();

  static async start(n: number): Promise<Fleet> {
    const f = new Fleet();
    await Promise.all(
      Array.from({ length: n }, async () => {
        const p = fork(LOADGEN, { execArgv: ['--import', 'tsx', '--max-old-space-size=4096'], stdio: 'inherit' });
        p.once('exit', reap(p.pid!));
        f.procs.push(p);
        p.on('message', (m: { t?: string; seq?: number }) => m?.t === 'seq' && f.#onSeq(m.seq!));
        await new Promise<void>((r) => p.once('message', () => r()));
      }),
    );
    return f;
  }

  #onSeq(seq: number): void {
    const n = (this.#seqDone.get(seq) ?? 0) + 1;
    this.#seqDone.set(seq, n);
    if (n === this.procs.length) {
      this.#seqDone.delete(seq);
      const w = this.#seqWaiters.get(seq);
      if (w) {
        this.#seqWaiters.delete(seq);
        w();
      } else this.#seqComplete.add(seq);
    }
  }

  /** Resolves when broadcast `seq` has reached every connection of every process (or after `ms`). */
  delivered(seq: number, ms: number): Promise<boolean> {
    if (this.#seqComplete.delete(seq)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.#seqWaiters.delete(seq);
        resolve(false);
      }, ms);
      this.#seqWaiters.set(seq, () => {
        clearTimeout(t);
        resolve(true);
      });
    });
  }

  /** Sends `cmd(i)` to process i and waits for every answer. */
  all<T>(cmd: (i: number) => object): Promise<T[]> {
    return Promise.all(
      this.procs.map(
        (p, i) =>
          new Promise<T>((resolve) => {
            const id = this.#id++;
            const on = (m: { id?: number }) => {
              if (m?.id !== id) return;
              p.off('message', on);
              resolve(m as T);
            };
            p.on('message', on);
            p.send({ ...cmd(i), id });
          }),
      ),
    );
  }

  /** Opens `total` connections spread evenly over the processes. */
  async open(port: number, path: string, total: number, concurrency = 256, protocols?: string) {
    const n = this.procs.length;
    const answers = await this.all<{ opened: number; failed: number; ms: number; codes: Record<string, number> }>((i) => ({
      op: 'open',
      host: '127.0.0.1',
      port,
      path,
      n: Math.floor(total / n) + (i < total % n ? 1 : 0),
      localAddresses: Array.from({ length: ADDRS_PER_PROC }, (_, k) => `127.0.0.${i * ADDRS_PER_PROC + k + 1}`),
      concurrency,
      protocols,
    }));
    return {
      opened: answers.reduce((a, b) => a + b.opened, 0),
      failed: answers.reduce((a, b) => a + b.failed, 0),
      ms: Math.max(...answers.map((a) => a.ms)),
      codes: answers.map((a) => a.codes),
    };
  }

  async closeAll(): Promise<void> {
    this.#seqComplete.clear();
    this.#seqDone.clear();
    await this.all(() => ({ op: 'close' }));
  }

  stop(): void {
    for (const p of this.procs) p.kill('SIGKILL');
  }
}
