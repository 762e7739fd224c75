/**
 * The paced queue of one bot's outgoing calls. Telegram allows about one
 * message per second per chat and about thirty per second per bot; beyond
 * that it answers 429. So each chat's calls wait `chatIntervalMs` after the
 * chat's previous one, and at most `perSecond` leave per second in all,
 * chats taking turns (one busy chat cannot starve the others). Calls of one
 * chat leave in order, one at a time.
 *
 * Bounded: at most `maxQueued` calls wait; beyond, a call is refused at
 * once (counted in `overflow`, and its caller logs it): never dropped
 * without a trace.
 */
export interface OutboxOptions {
  chatIntervalMs: number;
  perSecond: number;
  maxQueued: number;
}

type Job = () => Promise<void>;

interface ChatQueue {
  jobs: Job[];
  /** When this chat may send next. */
  nextAt: number;
  running: boolean;
}

export class Outbox {
  readonly #chats = new Map<string, ChatQueue>();
  /** Chats with waiting jobs, in turn order. */
  #turns: string[] = [];
  #queued = 0;
  /** Send times of the last second (the global cap). */
  #recent: number[] = [];
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  overflow = 0;
  sent = 0;

  constructor(private readonly o: OutboxOptions) {}

  get queued(): number {
    return this.#queued;
  }

  /** Queues `job` for `chat`; false (counted) when the queue is full or closed. */
  push(chat: string, job: Job): boolean {
    if (this.#closed || this.#queued >= this.o.maxQueued) {
      this.overflow++;
      return false;
    }
    let q = this.#chats.get(chat);
    if (!q) {
      if (this.#chats.size >= 10_000) this.#forgetIdle();
      this.#chats.set(chat, (q = { jobs: [], nextAt: 0, running: false }));
    }
    q.jobs.push(job);
    this.#queued++;
    if (q.jobs.length === 1 && !q.running) this.#turns.push(chat);
    this.#pump();
    return true;
  }

  #pump(): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const now = Date.now();
    this.#recent = this.#recent.filter((t) => now - t < 1000);
    let wait = Infinity;
    const keep: string[] = [];
    for (const chat of this.#turns) {
      const q = this.#chats.get(chat)!;
      if (q.running || q.jobs.length === 0) continue;
      if (this.#recent.length >= this.o.perSecond) {
        wait = Math.min(wait, 1000 - (now - this.#recent[0]!));
        keep.push(chat);
        continue;
      }
      if (q.nextAt > now) {
        wait = Math.min(wait, q.nextAt - now);
        keep.push(chat);
        continue;
      }
      this.#run(chat, q, now);
    }
    this.#turns = keep;
    if (wait !== Infinity) {
      this.#timer = setTimeout(() => this.#pump(), Math.max(1, wait));
      this.#timer.unref();
    }
  }

  #run(chat: string, q: ChatQueue, now: number): void {
    const job = q.jobs.shift()!;
    this.#queued--;
    q.running = true;
    this.#recent.push(now);
    this.sent++;
    void job()
      .catch(() => {}) // the job reports its own failure
      .finally(() => {
        q.running = false;
        q.nextAt = Date.now() + this.o.chatIntervalMs;
        if (q.jobs.length > 0) this.#turns.push(chat);
        this.#pump();
      });
  }

  /** Chats with nothing waiting whose pause is over: nothing to remember about them. */
  #forgetIdle(): void {
    const now = Date.now();
    for (const [chat, q] of this.#chats) if (!q.running && q.jobs.length === 0 && q.nextAt <= now) this.#chats.delete(chat);
  }

  /** Stops sending; what waits is dropped (returned as a count, for the log). */
  close(): number {
    this.#closed = true;
    clearTimeout(this.#timer);
    const dropped = this.#queued;
    this.#chats.clear();
    this.#turns = [];
    this.#queued = 0;
    return dropped;
  }
}
