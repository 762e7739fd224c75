/**
 * Every rate limit of a worker, as token buckets on its uWS thread
 * (limits/buckets.ts):
 *
 * | limit                      | key                 | checked                                   | over it                      |
 * |----------------------------|---------------------|-------------------------------------------|------------------------------|
 * | FRAME_RATE_LIMIT           | connection          | every frame                               | close 4008                   |
 * | CONNECT_RATE_PER_IP        | client IP           | upgrade                                   | close 4030                   |
 * | RATE_LIMIT_MESSAGES/WINDOW | creator + session   | valid user_message, in arrival order      | "Rate limit exceeded"        |
 * | AI_BUDGET_PER_MINUTE       | creator             | valid user_message, in arrival order      | "AI request budget exceeded" |
 *
 * Each limit is off at 0 (FRAME_RATE_LIMIT, CONNECT_RATE_PER_IP,
 * RATE_LIMIT_MESSAGES, AI_BUDGET_PER_MINUTE): then nothing is charged.
 *
 * The session and creator budgets are reconciled with the other workers and
 * hosts through a RateStore (limits/sync.ts states the overshoot bound);
 * the frame and connect caps are per worker, like the sockets they guard.
 */
import type { Logger } from '../observability/log.js';
import { MessageTables } from './admit.js';
import { nowUs } from './buckets.js';
import { KeyedBuckets } from './keyed.js';
import type { RateStore } from './store.js';
import { RateSync } from './sync.js';

/** A session's rate-limit key: creator + session id (a session id is only unique within its creator). */
export function sessionKey(creatorId: string, sessionId: string): string {
  return `${creatorId}\u0000${sessionId}`;
}

export interface LimitsConfig {
  /** Frames per second per socket; 0: off. */
  frameRateLimit: number;
  /** New sockets per client IP per second; 0: off. */
  connectRatePerIp: number;
  rateLimitMessages: number;
  rateLimitWindowS: number;
  /** AI requests per creator per minute; 0: off. */
  aiBudgetPerMinute: number;
  /** How often the budgets are reconciled with the store. */
  rateLimitSyncMs: number;
  /** Sockets per worker: sizes the tables. */
  maxConnections: number;
}

/** Slots a socket holds while open. */
export interface ConnSlots {
  frameSlot: number;
  sessionSlot: number;
  creatorSlot: number;
}

/** What the metrics show of the limits. */
export interface LimitStats {
  /** Keys with a bucket, by kind (frame, connect, session, creator). */
  keys: Record<string, number>;
  /** Keys that had to share the overflow bucket (a table was full). */
  overflows: number;
  /** Batches the store (primary or Redis) could not take. */
  syncFailures: number;
}

/** Table sizes are fixed (allocated once): at most this many slots of a kind (8 bytes each, 12 for a synchronised budget). */
const MAX_SLOTS = 1 << 20;

export class Limits {
  readonly frames: KeyedBuckets | undefined;
  readonly connects: KeyedBuckets | undefined;
  readonly sessions: KeyedBuckets | undefined;
  readonly creators: KeyedBuckets | undefined;
  /** The message tables, for the validation stage (inline and pool). */
  readonly messages: MessageTables;
  readonly #sync: RateSync | undefined;
  /** Every table that is on. */
  readonly #all: KeyedBuckets[];
  #closed = false;

  /** `store`: where budgets are reconciled with other workers and hosts (none: this process only); closed by close(). */
  constructor(
    cfg: LimitsConfig,
    private readonly store: RateStore | undefined,
    log: Logger,
  ) {
    // A connection holds one slot of each; sessions and creators also keep
    // theirs while in debt after their sockets left, hence the headroom.
    const perConn = Math.min(MAX_SLOTS, cfg.maxConnections + 1024);
    const withHeadroom = Math.min(MAX_SLOTS, 2 * cfg.maxConnections + 1024);
    const synced = store !== undefined;
    this.frames = cfg.frameRateLimit > 0 ? new KeyedBuckets('frame', perConn, cfg.frameRateLimit, 1000) : undefined;
    this.connects = cfg.connectRatePerIp > 0 ? new KeyedBuckets('connect', 65_536, cfg.connectRatePerIp, 1000) : undefined;
    this.sessions = cfg.rateLimitMessages > 0 ? new KeyedBuckets('session', withHeadroom, cfg.rateLimitMessages, cfg.rateLimitWindowS * 1000, synced) : undefined;
    this.creators = cfg.aiBudgetPerMinute > 0 ? new KeyedBuckets('creator', withHeadroom, cfg.aiBudgetPerMinute, 60_000, synced) : undefined;
    this.messages = new MessageTables(this.sessions?.table, this.creators?.table);
    this.#all = [this.frames, this.connects, this.sessions, this.creators].filter((t): t is KeyedBuckets => t !== undefined);
    const budgets = [this.sessions, this.creators].filter((t): t is KeyedBuckets => t !== undefined);
    this.#sync = store && budgets.length > 0 ? new RateSync(store, budgets, cfg.rateLimitSyncMs, log) : undefined;
  }

  /**
   * Before a socket of this session is served: if the session or its
   * creator is new to this worker and budgets are shared, resolves once
   * their state has been fetched from the store (at most `waitMs`; a store
   * that cannot be reached does not hold the socket longer). Undefined
   * when there is nothing to wait for. `sessionKey` undefined: a session id
   * the gateway just made up, which cannot have spent anything yet.
   */
  prepare(creatorId: string, sessionKey: string | undefined, waitMs = 250): Promise<void> | undefined {
    const sync = this.#sync;
    if (sync === undefined) return undefined;
    const freshSession = sessionKey !== undefined && (this.sessions?.touch(sessionKey) ?? false);
    const freshCreator = this.creators?.touch(creatorId) ?? false;
    if (!freshSession && !freshCreator) return undefined;
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, waitMs);
      void sync.whenSynced().then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Takes a connection attempt for `ip`; false when over CONNECT_RATE_PER_IP. */
  takeConnect(ip: string): boolean {
    return this.connects === undefined || this.connects.take(ip);
  }

  /** The slots of a socket that opens; give them back with `release`. `newSession`: an id the gateway made up (nothing to fetch). */
  acquire(connectionId: string, creatorId: string, sessionKey: string, newSession = false): ConnSlots {
    return {
      frameSlot: this.frames?.acquire(connectionId) ?? 0,
      sessionSlot: this.sessions?.acquire(sessionKey, !newSession) ?? 0,
      creatorSlot: this.creators?.acquire(creatorId) ?? 0,
    };
  }

  /**
   * Gives back a closing socket's slots. A session or creator with takes
   * not yet reported is reported now, not at the next period: its client
   * may be reconnecting to another worker or host this very moment (a
   * reload, a network switch), which reads the budget from the store.
   */
  release(connectionId: string, creatorId: string, sessionKey: string): void {
    this.frames?.release(connectionId);
    // Both released: a session with takes to report must not keep its creator held.
    const session = this.sessions?.release(sessionKey) ?? false;
    const creator = this.creators?.release(creatorId) ?? false;
    if (session || creator) this.#sync?.syncNow();
  }

  /** Takes a frame on the socket's bucket; false when over FRAME_RATE_LIMIT. */
  takeFrame(frameSlot: number): boolean {
    return this.frames === undefined || this.frames.table.take(frameSlot, nowUs());
  }

  stats(): LimitStats {
    return {
      keys: Object.fromEntries(this.#all.map((t) => [t.name, t.size])),
      overflows: this.#all.reduce((n, t) => n + t.overflows, 0),
      syncFailures: this.#sync?.failures ?? 0,
    };
  }

  /** Reconciles the budgets with the store now (tests; otherwise periodic). */
  sync(): Promise<void> {
    return this.#sync?.sync() ?? Promise.resolve();
  }

  /** Reports pending takes, stops the timers and closes the store. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#sync?.close();
    for (const t of this.#all) t.close();
    await this.store?.close();
  }
}
