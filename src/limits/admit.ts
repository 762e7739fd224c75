/**
 * The per-message limits, applied on the uWS thread to every valid message
 * in arrival order, whichever thread decoded it (pipeline/validator.ts): the
 * session's message budget (RATE_LIMIT_*), then the creator's AI request
 * budget (AI_BUDGET_PER_MINUTE). A message over the session budget does not
 * spend the creator's.
 */
import type { BucketTable } from './buckets.js';

export type MessageLimit = 'session' | 'creator';

export class MessageTables {
  constructor(
    readonly session: BucketTable | undefined,
    readonly creator: BucketTable | undefined,
  ) {}

  /** Takes one message from the session's and the creator's buckets; the limit that refused it, if one did. */
  admit(sessionSlot: number, creatorSlot: number, now: number): MessageLimit | undefined {
    if (this.session && !this.session.take(sessionSlot, now)) return 'session';
    if (this.creator && !this.creator.take(creatorSlot, now)) return 'creator';
    return undefined;
  }
}
