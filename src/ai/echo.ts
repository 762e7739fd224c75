/** The embedded engine used when AI_ENGINE_URL is unset: it answers the question with itself. */
import type { AiEngine, Query } from './engine.js';
import type { Answer } from '../protocol/frames.js';

const NO_SOURCES: unknown[] = [];

export class EchoEngine implements AiEngine {
  ask(q: Query): Promise<Answer> {
    return Promise.resolve({ response: q.query, confidence: 1, sources: NO_SOURCES });
  }

  async close(): Promise<void> {}
}
