/**
 * A widget.v2 test client: offers `widget.v2` with the token as
 * `bearer.<jwt>`, keeps the last offset of both streams, and reconnects with
 * `resume_session` / `resume_broadcast`. It records every frame it was sent,
 * across reconnects, so a test can check offsets for gaps and duplicates.
 * (The browser SDK, src/sdk/, is the real client; this one is deliberately
 * naive: it never drops a duplicate, so the server's guarantees show.)
 */
import WebSocket from 'ws';
import type { Frame } from './client.js';

export interface Pos {
  epoch: string;
  offset: number;
}

export class V2Client {
  ws!: WebSocket;
  /** Every frame received, across reconnects. */
  readonly frames: Frame[] = [];
  session: Pos | undefined;
  broadcast: Pos | undefined;
  status: Frame | undefined;
  protocol = '';
  closes: Array<{ code: number; reason: string }> = [];
  /** The `replay` frames received (their frames are in `frames`, in place). */
  readonly replays: Array<{ stream: string; frames: number }> = [];
  #waiters: Array<() => void> = [];

  constructor(
    readonly base: string,
    readonly creatorId: string,
    readonly token: string,
    readonly sessionId?: string,
  ) {}

  /** Opens a socket (resuming both streams when positions are known) and waits for connection_status. */
  async connect(o: { resume?: boolean; extra?: Record<string, string>; protocols?: string[] } = {}): Promise<Frame> {
    const start = this.frames.length;
    const q = new URLSearchParams(o.extra);
    if (this.sessionId) q.set('session_id', this.sessionId);
    if (o.resume !== false && this.session) q.set('resume_session', `${this.session.epoch}:${this.session.offset}`);
    if (o.resume !== false && this.broadcast) q.set('resume_broadcast', `${this.broadcast.epoch}:${this.broadcast.offset}`);
    const ws = new WebSocket(`${this.base}/api/v1/channels/widget/${this.creatorId}/connect?${q}`, [...(o.protocols ?? ['widget.v2']), `bearer.${this.token}`]);
    this.ws = ws;
    ws.on('error', () => {});
    ws.on('message', (data) => {
      const f = JSON.parse(data.toString()) as Frame;
      // A `replay` frame (replay=batch) carries a resume's frames as they would have come one by one.
      if (f.type === 'replay') this.replays.push({ stream: f.stream as string, frames: (f.frames as Frame[]).length });
      for (const g of f.type === 'replay' ? (f.frames as Frame[]) : [f]) {
        this.#track(g);
        this.frames.push(g);
      }
      for (const w of this.#waiters.splice(0)) w();
    });
    ws.on('close', (code, reason) => {
      this.closes.push({ code, reason: reason.toString() });
      for (const w of this.#waiters.splice(0)) w();
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => {
        this.protocol = ws.protocol;
        resolve();
      });
      ws.once('close', (code) => reject(new Error(`closed before open (${code})`)));
      ws.once('unexpected-response', (_r, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    });
    this.status = await this.next((f) => f.type === 'connection_status', 5000, start);
    return this.status;
  }

  #track(f: Frame): void {
    if (f.type === 'connection_status') {
      const s = (f.details as { streams?: { session: Pos; broadcast: Pos } }).streams;
      if (s) {
        this.session = { ...s.session };
        this.broadcast = { ...s.broadcast };
      }
      return;
    }
    if (f.type === 'continuity_lost') {
      const pos = { epoch: f.epoch as string, offset: f.offset as number };
      if (f.stream === 'session') this.session = pos;
      else this.broadcast = pos;
      return;
    }
    if (typeof f.offset !== 'number') return;
    const which = f.type === 'broadcast' ? 'broadcast' : 'session';
    const cur = this[which];
    if (cur) cur.offset = f.offset;
  }

  /** Waits for (without removing) the first frame from index `from` matching `pred`. */
  async next(pred: (f: Frame) => boolean, timeoutMs = 5000, from = 0): Promise<Frame> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const f = this.frames.slice(from).find(pred);
      if (f) return f;
      if (Date.now() > end) throw new Error(`timed out waiting for a frame; last got ${JSON.stringify(this.frames.slice(-3)).slice(0, 600)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, end - Date.now()));
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Frames of one stream, by offset, in arrival order. */
  offsets(stream: 'session' | 'broadcast'): number[] {
    return this.frames.filter((f) => typeof f.offset === 'number' && (stream === 'broadcast') === (f.type === 'broadcast')).map((f) => f.offset as number);
  }

  #auto = false;

  /**
   * Keeps reconnecting (with resume) whenever the socket closes, until
   * `stop()`: what a browser SDK does, minimally. Each reconnect is recorded.
   * The retry timer does not keep the process alive: a test that failed
   * before its `stop()` (its servers then killed by its teardown) must not
   * leave a client retrying forever, holding the file until tap's time-out.
   */
  keepConnected(): void {
    this.#auto = true;
    const again = (delay: number): void => {
      setTimeout(() => {
        if (!this.#auto) return;
        this.connect().then(
          () => this.ws.once('close', () => again(20 + Math.random() * 50)),
          () => again(Math.min(delay * 2, 500)),
        );
      }, delay).unref();
    };
    this.ws.once('close', () => again(20 + Math.random() * 50));
  }

  stop(): void {
    this.#auto = false;
    this.ws?.close();
  }

  send(o: unknown): void {
    this.ws.send(JSON.stringify(o));
  }

  /** Cuts the TCP connection without a close frame. */
  cut(): void {
    this.ws.terminate();
  }

  close(): void {
    this.ws.close();
  }

  get open(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }
}
