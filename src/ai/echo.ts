/**
 * The embedded engine used when AI_ENGINE_URL is unset: it answers the
 * question with itself, streamed word by word (with `delayMs` between words,
 * so a demo shows streaming with no engine at all). With no delay it
 * answers at once, whole: pieces that would all come in the same turn are
 * merged into the answer anyway (pipeline/chat.ts).
 */
import { GatewayError } from '../errors.js';
import type { AiEngine, AskOptions, Query } from './engine.js';
import type { Answer } from '../protocol/frames.js';

const NO_SOURCES: unknown[] = [];

export class EchoEngine implements AiEngine {
  constructor(private readonly delayMs = 0) {}

  ask(q: Query, o: AskOptions = {}): Promise<Answer> {
    const answer: Answer = { response: q.query, confidence: 1, sources: NO_SOURCES };
    if (o.onDelta === undefined || this.delayMs === 0) return Promise.resolve(answer);
    const pieces = q.query.match(/\S+\s*|\s+/g) ?? [q.query];
    return new Promise((resolve, reject) => {
      let i = 0;
      const onCancel = () => {
        clearTimeout(timer);
        reject(new GatewayError('GW_ERR_AI_CANCELLED', 'cancelled by the client'));
      };
      const next = () => {
        o.onDelta?.(pieces[i++]!);
        if (i < pieces.length) timer = setTimeout(next, this.delayMs);
        else {
          o.signal?.removeEventListener('abort', onCancel);
          resolve(answer);
        }
      };
      let timer = setTimeout(next, this.delayMs);
      o.signal?.addEventListener('abort', onCancel, { once: true });
    });
  }

  async close(): Promise<void> {}
}
