/**
 * The per-message limits, applied by whichever thread validated the message
 * (the uWS thread inline, or a pool thread) on the same shared buckets: the
 * session's message budget (RATE_LIMIT_*), then the creator's AI request
 * budget (AI_BUDGET_PER_MINUTE). A message over the session budget does not
 * spend the creator's.
 */
import { BucketTable, type SharedTable } from './buckets.js';

export type MessageLimit = 'session' | 'creator';

/** The message tables as they cross to a pool thread. */
export interface SharedMessageTables {
  session: SharedTable | undefined;
  creator: SharedTable | undefined;
}

export class MessageTables {
  constructor(
    readonly session: BucketTable | undefined,
    readonly creator: BucketTable | undefined,
  ) {}

  static attach(s: SharedMessageTables): MessageTables {
    return new MessageTables(s.session && new BucketTable(s.session), s.creator && new BucketTable(s.creator));
  }

  get shared(): SharedMessageTables {
    return { session: this.session?.shared, creator: this.creator?.shared };
  }

  /** Takes one message from the session's and the creator's buckets; the limit that refused it, if one did. */
  admit(sessionSlot: number, creatorSlot: number, now: number): MessageLimit | undefined {
    if (this.session && !this.session.take(sessionSlot, now)) return 'session';
    if (this.creator && !this.creator.take(creatorSlot, now)) return 'creator';
    return undefined;
  }
}
