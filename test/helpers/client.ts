/** A WebSocket test client (the `ws` library) with an inbox and awaitable frames and close. */
import WebSocket from 'ws';

export interface Frame {
  type: string;
  [k: string]: unknown;
}

export interface Closed {
  code: number;
  reason: string;
}

export class Client {
  readonly ws: WebSocket;
  readonly inbox: Frame[] = [];
  readonly closed: Promise<Closed>;
  readonly opened: Promise<void>;
  /** The connection_status frame, once connectWidget has read it. */
  status: Frame | undefined;
  /** The socket's last error (a 1006 close says no more). */
  error: Error | undefined;
  #waiters: Array<() => void> = [];

  constructor(url: string, opts: WebSocket.ClientOptions = {}) {
    this.ws = new WebSocket(url, opts);
    this.ws.on('message', (data, isBinary) => {
      const text = isBinary ? Buffer.from(data as Buffer).toString() : data.toString();
      this.inbox.push(JSON.parse(text) as Frame);
      for (const w of this.#waiters.splice(0)) w();
    });
    this.ws.on('error', (err) => (this.error = err));
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('close', () => reject(new Error('closed before open')));
      this.ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => {
        resolve({ code, reason: reason.toString() });
        for (const w of this.#waiters.splice(0)) w();
      });
    });
  }

  send(obj: unknown): void {
    this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  }

  /** Waits for (and removes from the inbox) the first frame matching `pred`. */
  async next(pred: (f: Frame) => boolean = () => true, timeoutMs = 5000): Promise<Frame> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const i = this.inbox.findIndex(pred);
      if (i >= 0) return this.inbox.splice(i, 1)[0]!;
      if (this.ws.readyState === WebSocket.CLOSED) {
        const c = await this.closed;
        throw new Error(`socket closed (${c.code} ${c.reason}${this.error ? `; ${this.error.message}` : ''}) while waiting; inbox ${JSON.stringify(this.inbox)}`);
      }
      const left = end - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for a frame; inbox ${JSON.stringify(this.inbox)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  nextOfType(type: string, timeoutMs?: number): Promise<Frame> {
    return this.next((f) => f.type === type, timeoutMs);
  }

  /**
   * Sends a user message and reads the whole exchange - typing true,
   * ai_response, typing false, in that order - returning the ai_response.
   * Throws if the frames differ.
   */
  async ask(content: string): Promise<Frame> {
    this.send({ type: 'user_message', content });
    const a = await this.next();
    if (a.type === 'error') throw new Error(`error frame: ${a.error}`);
    const r = await this.next();
    const b = await this.next();
    if (a.type !== 'typing_indicator' || a.is_typing !== true || r.type !== 'ai_response' || b.type !== 'typing_indicator' || b.is_typing !== false) {
      throw new Error(`unexpected exchange: ${JSON.stringify([a, r, b])}`);
    }
    return r;
  }

  close(): void {
    this.ws.close();
  }
}

export function widgetUrl(port: number, creatorId: string, token?: string, sessionId?: string): string {
  const q = new URLSearchParams();
  if (token !== undefined) q.set('token', token);
  if (sessionId !== undefined) q.set('session_id', sessionId);
  return `ws://127.0.0.1:${port}/api/v1/channels/widget/${creatorId}/connect?${q}`;
}

/** Opens a widget connection and waits for its connection_status frame. */
export async function connectWidget(port: number, creatorId: string, token: string, sessionId?: string): Promise<Client> {
  const c = new Client(widgetUrl(port, creatorId, token, sessionId));
  c.status = await c.nextOfType('connection_status');
  return c;
}

/** The connection id the gateway gave a client. */
export function connectionId(c: Client): string {
  return (c.status!.details as { connection_id: string }).connection_id;
}
