/**
 * Buckets by key (a session, a creator, a client IP) over one BucketTable.
 * The key -> slot map lives on the uWS thread only; pool threads are given
 * slot numbers. A key is held while a connection uses it (`acquire` /
 * `release`); a sweep frees slots that are neither held nor in debt, since a
 * full bucket is the same as no bucket. So a session that reconnects within
 * its window finds its bucket as it left it.
 *
 * Slot 0 is the overflow bucket: if every slot is held or in debt (a flood of
 * keys beyond the table's capacity), new keys share it, so the table's memory
 * stays fixed and such keys are limited together, never let through.
 */
import { BucketTable, nowUs } from './buckets.js';

interface Entry {
  slot: number;
  refs: number;
  /** Not yet reconciled with the other workers (synchronised tables). */
  fresh: boolean;
}

export class KeyedBuckets {
  readonly table: BucketTable;
  readonly #slots = new Map<string, Entry>();
  readonly #free: number[] = [];
  readonly #timer: NodeJS.Timeout;
  /** Keys that got the shared overflow bucket because the table was full (a metric). */
  overflows = 0;
  /** When a full table was last swept for a new key (at most every 100 ms: a flood must not cost a sweep per key). */
  #sweptFull = 0;

  constructor(
    readonly name: string,
    capacity: number,
    limit: number,
    windowMs: number,
    counted = false,
  ) {
    this.table = new BucketTable(capacity + 1, limit, windowMs, counted);
    for (let s = capacity; s >= 1; s--) this.#free.push(s);
    this.#timer = setInterval(() => this.sweep(), Math.max(250, Math.min(windowMs, 10_000)));
    this.#timer.unref();
  }

  /** The slot of `key`, held until `release`. `known: false`: a key no other worker can have (nothing to fetch for it). */
  acquire(key: string, known = true): number {
    const e = this.#entry(key, known);
    e.refs++;
    return e.slot;
  }

  /** Gives back a hold on `key`; whether its slot has takes not yet reported (synchronised tables). */
  release(key: string): boolean {
    const e = this.#slots.get(key);
    if (e === undefined) return false;
    if (e.refs > 0) e.refs--;
    return this.table.charged(e.slot) > 0;
  }

  /** Takes one token for `key` (keys that no connection holds: client IPs). */
  take(key: string, now = nowUs()): boolean {
    return this.table.take(this.#entry(key).slot, now);
  }

  /** Gives `key` a slot if it has none; whether it is yet to be reconciled with the other workers. */
  touch(key: string): boolean {
    return this.#entry(key).fresh;
  }

  /** The slot `key` has now, if any. */
  slotOf(key: string): number | undefined {
    return this.#slots.get(key)?.slot;
  }

  /** Marks `key` to be reconciled again (its last report failed). */
  refresh(key: string): void {
    const e = this.#slots.get(key);
    if (e !== undefined) e.fresh = true;
  }

  /** Keys with a slot (for tests and metrics). */
  get size(): number {
    return this.#slots.size;
  }

  /** Every key with its slot and whether it is still to be reconciled; clears `fresh`. */
  *entries(): IterableIterator<[key: string, slot: number, fresh: boolean]> {
    for (const [key, e] of this.#slots) {
      const fresh = e.fresh;
      e.fresh = false;
      yield [key, e.slot, fresh];
    }
  }

  /** Frees the slots of keys that are not held and whose buckets are full. */
  sweep(now = nowUs()): void {
    for (const [key, e] of this.#slots) {
      if (e.refs === 0 && this.table.idle(e.slot, now)) this.#drop(key, e);
    }
  }

  #entry(key: string, known = true): Entry {
    let e = this.#slots.get(key);
    if (e !== undefined) return e;
    let slot = this.#free.pop();
    if (slot === undefined) {
      const now = Date.now();
      if (now - this.#sweptFull >= 100) {
        this.#sweptFull = now;
        this.sweep();
      }
      slot = this.#free.pop() ?? 0;
    }
    if (slot !== 0) this.table.reset(slot);
    else this.overflows++;
    e = { slot, refs: 0, fresh: known };
    if (slot !== 0) this.#slots.set(key, e);
    return e;
  }

  #drop(key: string, e: Entry): void {
    this.#slots.delete(key);
    this.#free.push(e.slot);
  }

  close(): void {
    clearInterval(this.#timer);
  }
}
