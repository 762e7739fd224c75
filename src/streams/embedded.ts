/**
 * The streams of a worker in embedded mode: kept by the primary (so a
 * worker that crashes loses nothing), asked over IPC. The primary assigns
 * offsets and relays each appended frame to every worker that follows the
 * stream, the appending one included, before it answers: one IPC channel
 * per worker keeps them in offset order (primary/streams.ts). Chunks of a
 * streamed answer are relayed to the other followers, and the primary keeps
 * the text so far for a resumer.
 */
import type { EmbeddedCluster } from '../cluster/embedded.js';
import type { AppendOptions, Chunk, Claim, Position, ReadResult, StoredFrame, StreamSink, StreamStore } from './streams.js';

export class EmbeddedStreams implements StreamStore {
  constructor(
    private readonly primary: EmbeddedCluster,
    sink: StreamSink,
  ) {
    primary.onStream(sink);
  }

  append(stream: string, payload: Uint8Array, o: AppendOptions = {}): Promise<Position> {
    return this.primary.request('append', { arg: stream, payload, ...(o.cmid !== undefined ? { cmid: o.cmid } : {}), ...(o.ends !== undefined ? { ends: o.ends } : {}) });
  }

  chunk(stream: string, chunk: Chunk): void {
    this.primary.send({ t: 'chunk', stream, chunk });
  }

  follow(stream: string, after?: Position): Promise<ReadResult> {
    return this.primary.request('follow', { arg: stream, ...(after ? { pos: after } : {}) });
  }

  unfollow(stream: string): void {
    this.primary.send({ t: 'unfollow', stream });
  }

  claim(stream: string, cmid: string): Promise<Claim> {
    return this.primary.request('claim', { arg: stream, cmid });
  }

  async frameAt(stream: string, at: Position): Promise<StoredFrame | undefined> {
    return (await this.primary.request('frame-at', { arg: stream, pos: at })) ?? undefined;
  }

  async close(): Promise<void> {}
}
