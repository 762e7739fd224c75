/**
 * Token buckets kept as GCRA (the generic cell rate algorithm): one
 * "theoretical arrival time" (TAT, microseconds since the epoch) per bucket.
 * A table belongs to the uWS thread of one worker: every take is made there,
 * whichever thread decoded the frame (the validation pool only decodes;
 * pipeline/validator.ts charges its results on this thread, in arrival
 * order), so a bucket is a plain array element, with no atomics and no
 * BigInt on the path of every message.
 *
 * A table holds buckets of one kind (all with one rate): `limit` takes per
 * `windowMs`, refilled continuously, a burst of `limit` allowed. A slot's
 * TAT at or before now is a full bucket; TAT = now + windowMs is an empty
 * one. Microseconds since the epoch are integers far below 2^53, exact in
 * a double.
 *
 * A table that is synchronised with other workers (see limits/sync.ts) also
 * counts, per slot, the takes not yet reported.
 */
import { performance } from 'node:perf_hooks';

/** This thread's performance.timeOrigin, read once: Node 20's getter checks its receiver on every read. */
const ORIGIN_MS = performance.timeOrigin;

/** Wall-clock microseconds, the same in every thread of the process (each thread adds its own time origin). */
export function nowUs(): number {
  return Math.round((ORIGIN_MS + performance.now()) * 1000);
}

export class BucketTable {
  readonly #tat: Float64Array;
  readonly #charged: Int32Array;
  /** Microseconds one take adds to the TAT: windowMs / limit. */
  readonly intervalUs: number;
  /** How far ahead of now the TAT may be before a take: the burst, less one interval. */
  readonly tauUs: number;

  /** A table of `capacity` slots for `limit` takes per `windowMs`; `counted` if synchronised. */
  constructor(
    readonly capacity: number,
    limit: number,
    windowMs: number,
    readonly counted = false,
  ) {
    this.#tat = new Float64Array(capacity);
    this.#charged = new Int32Array(counted ? capacity : 0);
    this.intervalUs = (windowMs * 1000) / limit;
    this.tauUs = windowMs * 1000 - this.intervalUs;
  }

  /** Takes one token from `slot`; false (and nothing taken) when it is empty. */
  take(slot: number, now: number): boolean {
    const t = this.#tat[slot]!;
    const base = t > now ? t : now;
    if (base - now > this.tauUs) return false;
    this.#tat[slot] = Math.ceil(base + this.intervalUs);
    if (this.counted) this.#charged[slot]!++;
    return true;
  }

  /** Moves the slot's TAT forward to `tatUs` if it is behind (what other workers took). */
  adopt(slot: number, tatUs: number): void {
    const want = Math.ceil(tatUs);
    if (this.#tat[slot]! < want) this.#tat[slot] = want;
  }

  /** Takes made on the slot since the last call (synchronised tables). */
  drainCharged(slot: number): number {
    if (!this.counted) return 0;
    const n = this.#charged[slot]!;
    this.#charged[slot] = 0;
    return n;
  }

  /** Takes made on the slot and not yet reported. */
  charged(slot: number): number {
    return this.counted ? this.#charged[slot]! : 0;
  }

  /** Gives back takes that could not be reported (they are reported next time). */
  restoreCharged(slot: number, n: number): void {
    if (this.counted) this.#charged[slot]! += n;
  }

  /** The slot as a full bucket with nothing to report (before it is reused). */
  reset(slot: number): void {
    this.#tat[slot] = 0;
    if (this.counted) this.#charged[slot] = 0;
  }

  /** The slot's TAT in microseconds. */
  tat(slot: number): number {
    return this.#tat[slot]!;
  }

  /** Full, with nothing left to report: the same as no bucket. */
  idle(slot: number, now: number): boolean {
    return this.#tat[slot]! <= now && this.charged(slot) === 0;
  }
}
