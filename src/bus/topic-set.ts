/**
 * The topics a bus node listens to, with changes gathered and handed to
 * `flush` in one batch at the end of the event-loop turn: a connect storm costs a few transport commands, not one per
 * socket. A subscribe and unsubscribe of the same topic within one batch
 * cancel out.
 */
export class TopicSet {
  readonly #topics = new Set<string>();
  #add = new Set<string>();
  #del = new Set<string>();
  #scheduled = false;

  constructor(private readonly flush: (add: string[], del: string[]) => void) {}

  has(topic: string): boolean {
    return this.#topics.has(topic);
  }

  add(topic: string): void {
    if (this.#topics.has(topic)) return;
    this.#topics.add(topic);
    if (!this.#del.delete(topic)) this.#add.add(topic);
    this.#schedule();
  }

  delete(topic: string): void {
    if (!this.#topics.delete(topic)) return;
    if (!this.#add.delete(topic)) this.#del.add(topic);
    this.#schedule();
  }

  /** Hands the pending changes to `flush` now. */
  flushNow(): void {
    this.#scheduled = false;
    if (this.#add.size === 0 && this.#del.size === 0) return;
    const add = [...this.#add];
    const del = [...this.#del];
    this.#add = new Set();
    this.#del = new Set();
    this.flush(add, del);
  }

  /** Forgets every topic and pending change (on close). */
  clear(): void {
    this.#topics.clear();
    this.#add.clear();
    this.#del.clear();
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.flushNow());
  }
}
