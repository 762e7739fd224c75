/**
 * Per-key token buckets (the key is creator + session), in this worker's
 * memory. `capacity` tokens per `windowS`, refilled continuously: a burst of
 * `capacity` is allowed, then one message per windowS/capacity.
 *
 * Memory stays bounded by live keys: one sweep timer per limiter (never one
 * per socket) drops buckets that have refilled completely, since a full
 * bucket is the same as no bucket.
 */
export interface RateLimiter {
  /** Takes one token for `key`; false when the key is over its limit. */
  take(key: string): boolean;
  /** Stops the sweep timer. Safe to call twice. */
  close(): void;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class TokenBucketLimiter implements RateLimiter {
  readonly #buckets = new Map<string, Bucket>();
  readonly #capacity: number;
  readonly #perMs: number;
  readonly #timer: NodeJS.Timeout;

  constructor(capacity: number, windowS: number, private readonly now: () => number = Date.now) {
    this.#capacity = capacity;
    this.#perMs = capacity / (windowS * 1000);
    this.#timer = setInterval(() => this.#sweep(), windowS * 1000);
    this.#timer.unref();
  }

  take(key: string): boolean {
    const now = this.now();
    let b = this.#buckets.get(key);
    if (b === undefined) {
      b = { tokens: this.#capacity, at: now };
      this.#buckets.set(key, b);
    } else {
      b.tokens = Math.min(this.#capacity, b.tokens + (now - b.at) * this.#perMs);
      b.at = now;
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Number of keys tracked (for tests and metrics). */
  get size(): number {
    return this.#buckets.size;
  }

  #sweep(): void {
    const now = this.now();
    for (const [key, b] of this.#buckets) {
      if (b.tokens + (now - b.at) * this.#perMs >= this.#capacity) this.#buckets.delete(key);
    }
  }

  close(): void {
    clearInterval(this.#timer);
  }
}
