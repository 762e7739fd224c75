/**
 * The Telegram Bot API client: `POST {apiUrl}/bot{token}/{method}` with a
 * JSON body, through one undici keep-alive pool.
 *
 * Failures: a 5xx or a network error is retried with exponential back-off
 * (at most `retries` times); a 429 waits `parameters.retry_after` seconds
 * (as Telegram asks) and is retried without counting against `retries`, at
 * most `max429` times; any other 4xx is final (a bad chat id, a blocked
 * bot: retrying cannot help). The token is part of the URL path and is never
 * logged: errors name the method only.
 */
import { Pool } from 'undici';
import { GatewayError } from '../../errors.js';

export interface BotApiOptions {
  /** https://api.telegram.org, or a test server. */
  apiUrl: string;
  /** Keep-alive connections to the API. */
  connections?: number;
  retries?: number;
  /** First back-off (doubles per retry). */
  backoffMs?: number;
  /** The longest a 429's retry_after is honoured for (longer: fails). */
  maxRetryAfterS?: number;
  max429?: number;
  timeoutMs?: number;
}

export interface ApiResult {
  ok: boolean;
  result?: unknown;
  description?: string;
  error_code?: number;
  parameters?: { retry_after?: number };
}

export class BotApiError extends GatewayError {
  constructor(
    readonly method: string,
    readonly status: number,
    description: string,
  ) {
    super('GW_ERR_CHANNEL', `Telegram ${method}: ${status ? `HTTP ${status}` : 'no answer'}${description ? ` (${description})` : ''}`);
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

export class BotApi {
  readonly #pool: Pool;
  readonly #base: string;
  /** Calls retried after a 5xx or a network error, and waits for a 429 (metrics). */
  retried = 0;
  throttled = 0;

  constructor(private readonly o: BotApiOptions) {
    const u = new URL(o.apiUrl);
    this.#base = u.pathname.replace(/\/$/, '');
    this.#pool = new Pool(u.origin, { connections: o.connections ?? 16, keepAliveTimeout: 30_000, headersTimeout: o.timeoutMs ?? 15_000, bodyTimeout: o.timeoutMs ?? 15_000 });
  }

  /** Calls `method`; resolves with its `result`, rejects with a BotApiError once retrying cannot help. */
  async call(token: string, method: string, body: Record<string, unknown>): Promise<unknown> {
    const retries = this.o.retries ?? 4;
    let attempt = 0;
    let throttles = 0;
    for (;;) {
      let status = 0;
      let answer: ApiResult | undefined;
      try {
        const res = await this.#pool.request({
          path: `${this.#base}/bot${token}/${method}`,
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
        status = res.statusCode;
        answer = (await res.body.json().catch(() => undefined)) as ApiResult | undefined;
      } catch {
        status = 0; // network error: retried below
      }
      if (status >= 200 && status < 300 && answer?.ok === true) return answer.result;
      if (status === 429 && throttles < (this.o.max429 ?? 10)) {
        const after = Math.max(1, Number(answer?.parameters?.retry_after ?? 1));
        if (after > (this.o.maxRetryAfterS ?? 60)) throw new BotApiError(method, status, `retry_after ${after} s is too long`);
        throttles++;
        this.throttled++;
        await sleep(after * 1000);
        continue;
      }
      if ((status === 0 || status >= 500) && attempt < retries) {
        attempt++;
        this.retried++;
        await sleep((this.o.backoffMs ?? 200) * 2 ** (attempt - 1));
        continue;
      }
      throw new BotApiError(method, status, answer?.description ?? '');
    }
  }

  close(): Promise<void> {
    return this.#pool.close();
  }
}
