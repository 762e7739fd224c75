/**
 * The slow-consumer policy: what a client that stops reading may cost, and
 * how it learns it was closed (4009) instead of losing frames silently.
 *
 * uWS stops sending to a socket whose buffer is over its `maxBackpressure`
 * (the hard limit): a published frame is then skipped for it, and so is a
 * close frame, which is why closing at the hard limit gave clients a bare
 * TCP close (1006). The gateway therefore closes at a soft limit below it,
 * while a close frame still fits:
 *
 *   hard  = MAX_BACKPRESSURE_BYTES (uWS's limit; memory per socket stays under
 *           hard + one frame)
 *   soft  = hard - margin, margin = 2 x (MAX_PAYLOAD_BYTES + 1 KiB)
 *
 * A socket is checked against `soft`:
 *   - before every direct send (answers, errors, targeted sends: Conn.send);
 *   - before a publish to its creator's topic once `checkEvery` bytes (half
 *     the margin) were published to that creator since its last check, so a
 *     socket at most `soft` at its last check is at most `soft + margin/2 +
 *     one frame` (under `hard`) when it is closed;
 *   - every SLOW_SWEEP_MS, for everything else.
 */
export interface SlowConsumerPolicy {
  hard: number;
  soft: number;
  checkEvery: number;
}

export function slowConsumerPolicy(maxBackpressureBytes: number, maxPayloadBytes: number): SlowConsumerPolicy {
  const margin = 2 * (maxPayloadBytes + 1024);
  return { hard: maxBackpressureBytes, soft: maxBackpressureBytes - margin, checkEvery: margin / 2 };
}
