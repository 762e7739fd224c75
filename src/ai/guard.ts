/**
 * Protection around any AI engine: a bound on requests in flight per creator
 * (one creator's burst cannot take every slot of the worker), and a circuit
 * breaker (a dead engine is not hammered: after `failureThreshold`
 * consecutive failures, requests fail at once for `cooldownMs`; then one
 * probe goes through, and its success closes the circuit again).
 */
import { GatewayError } from '../errors.js';
import type { AiEngine, AskOptions, Query } from './engine.js';
import type { Answer } from '../protocol/frames.js';

export interface GuardOptions {
  maxInflightPerCreator: number;
  failureThreshold: number;
  cooldownMs: number;
}

export type BreakerState = 'closed' | 'open' | 'half-open';

export class GuardedEngine implements AiEngine {
  readonly #perCreator = new Map<string, number>();
  #failures = 0;
  #openedAt = 0;
  #state: BreakerState = 'closed';
  #probing = false;

  constructor(
    private readonly inner: AiEngine,
    private readonly o: GuardOptions,
    private readonly now: () => number = Date.now,
  ) {}

  get state(): BreakerState {
    if (this.#state === 'open' && this.now() - this.#openedAt >= this.o.cooldownMs) this.#state = 'half-open';
    return this.#state;
  }

  async ask(q: Query, o?: AskOptions): Promise<Answer> {
    const state = this.state;
    if (state === 'open' || (state === 'half-open' && this.#probing)) {
      throw new GatewayError('GW_ERR_AI_CIRCUIT_OPEN', 'AI engine circuit open: failing fast');
    }
    const n = this.#perCreator.get(q.creator_id) ?? 0;
    if (n >= this.o.maxInflightPerCreator) {
      throw new GatewayError('GW_ERR_AI_SATURATED', `AI engine saturated for creator: ${n} requests in flight`);
    }
    const probe = state === 'half-open';
    if (probe) this.#probing = true;
    this.#perCreator.set(q.creator_id, n + 1);
    try {
      const a = await this.inner.ask(q, o);
      this.#failures = 0;
      this.#state = 'closed';
      return a;
    } catch (err) {
      // Saturation is ours and a cancel the client's: neither counts against the engine.
      if (countsAgainstEngine(err)) {
        this.#failures++;
        if (probe || this.#failures >= this.o.failureThreshold) {
          this.#state = 'open';
          this.#openedAt = this.now();
        }
      }
      throw err;
    } finally {
      if (probe) this.#probing = false;
      const left = (this.#perCreator.get(q.creator_id) ?? 1) - 1;
      if (left <= 0) this.#perCreator.delete(q.creator_id);
      else this.#perCreator.set(q.creator_id, left);
    }
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** Whether a failure is the engine's (decided on the code, never the message). */
function countsAgainstEngine(err: unknown): boolean {
  if (!(err instanceof GatewayError)) return true;
  switch (err.code) {
    case 'GW_ERR_AI_SATURATED':
    case 'GW_ERR_AI_CANCELLED':
    case 'GW_ERR_AI_CIRCUIT_OPEN':
    case 'GW_ERR_CLOSED':
      return false;
    default:
      return true;
  }
}
