/**
 * The primary's half of the embedded-mode bus: it keeps which worker listens
 * to which topic and forwards each publish to the other interested workers,
 * never back to the publisher.
 */
import type { PrimaryToWorker } from '../cluster/ipc.js';

export interface RelayTarget {
  readonly id: number;
  send(msg: PrimaryToWorker): void;
}

export class Relay {
  readonly #byTopic = new Map<string, Set<RelayTarget>>();
  readonly #byWorker = new Map<RelayTarget, Set<string>>();

  update(w: RelayTarget, add: readonly string[], del: readonly string[]): void {
    let mine = this.#byWorker.get(w);
    if (!mine) this.#byWorker.set(w, (mine = new Set()));
    for (const topic of add) {
      mine.add(topic);
      let set = this.#byTopic.get(topic);
      if (!set) this.#byTopic.set(topic, (set = new Set()));
      set.add(w);
    }
    for (const topic of del) {
      mine.delete(topic);
      this.#drop(topic, w);
    }
  }

  publish(from: RelayTarget, topic: string, payload: Uint8Array): number {
    const set = this.#byTopic.get(topic);
    if (!set) return 0;
    let n = 0;
    for (const w of set) {
      if (w === from) continue;
      w.send({ t: 'msg', topic, payload });
      n++;
    }
    return n;
  }

  /** Forgets a worker that exited. */
  remove(w: RelayTarget): void {
    const mine = this.#byWorker.get(w);
    if (!mine) return;
    for (const topic of mine) this.#drop(topic, w);
    this.#byWorker.delete(w);
  }

  #drop(topic: string, w: RelayTarget): void {
    const set = this.#byTopic.get(topic);
    if (!set) return;
    set.delete(w);
    if (set.size === 0) this.#byTopic.delete(topic);
  }

  get topics(): number {
    return this.#byTopic.size;
  }
}
