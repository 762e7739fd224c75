/**
 * The slow-consumer policy: what a client that stops reading may cost, and
 * how it learns it was closed (4009) instead of losing frames silently.
 *
 * uWS stops sending to a socket whose buffer is over its `maxBackpressure`
 * (the hard limit): a published frame is then skipped for it, and so is a
 * close frame, which is why closing at the hard limit gave clients a bare
 * TCP close (1006). The gateway therefore closes at MAX_BACKPRESSURE_BYTES
 * (the soft limit) and gives uWS a hard limit above it by twice the largest
 * frame it can send, so a close frame always still fits:
 *
 *   soft     = MAX_BACKPRESSURE_BYTES
 *   largest  = 2 x max(MAX_PAYLOAD_BYTES, AI_ENGINE_MAX_RESPONSE_BYTES) + 4 KiB
 *              (a broadcast body, or an answer, as a JSON frame: escaping may grow it)
 *   hard     = soft + 2 x largest
 *
 * A socket is checked against `soft`:
 *   - before every direct send (answers, errors, targeted sends: Conn.send);
 *     a frame that would pass it closes the socket, unless nothing at all is
 *     buffered (one large answer to a socket that keeps up is fine);
 *   - before a publish to its creator's topic once `checkEvery` bytes (one
 *     broadcast frame) were published to that creator since its last check;
 *   - every SLOW_SWEEP_MS, for everything else.
 * Memory per socket stays under the soft limit plus two frames.
 */
export interface SlowConsumerPolicy {
  hard: number;
  soft: number;
  checkEvery: number;
}

export function slowConsumerPolicy(maxBackpressureBytes: number, maxPayloadBytes: number, maxAnswerBytes: number): SlowConsumerPolicy {
  const largest = 2 * Math.max(maxPayloadBytes, maxAnswerBytes) + 4096;
  return { soft: maxBackpressureBytes, hard: maxBackpressureBytes + 2 * largest, checkEvery: maxPayloadBytes + 1024 };
}
