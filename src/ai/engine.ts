/**
 * The AI engine interface: one question in, one answer out.
 *
 * Guarantee: `ask` always settles within the engine's time-out; it rejects
 * with a `GatewayError` (code GW_ERR_AI_ENGINE) on any failure - error status,
 * time-out, malformed answer, or too many requests in flight - and never
 * blocks the event loop.
 */
import type { Answer } from '../protocol/frames.js';

export interface Query {
  query: string;
  creator_id: string;
  session_id: string;
}

export interface AiEngine {
  ask(q: Query): Promise<Answer>;
  /** Aborts requests in flight; safe to call twice. */
  close(): Promise<void>;
}
