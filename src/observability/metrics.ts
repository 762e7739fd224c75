/**
 * Prometheus metrics of one worker (prom-client). The primary gathers every
 * worker's registry as JSON over IPC and serves the sum (AggregatorRegistry)
 * on GET /metrics. Frame counters on the hot path are plain numbers, copied
 * into prom-client when scraped: counting a frame is one increment (of a
 * property for frames in, of an array element for frames out: see OUT;
 * prom-client's own inc() showed up at 3-4% of a worker's CPU in profiles);
 * the AI latency histogram is a FastHistogram for the same reason.
 */
import { collectDefaultMetrics, Counter, Gauge, Registry, type Metric } from 'prom-client';
import type { Bus } from '../bus/bus.js';
import type { LimitStats } from '../limits/index.js';
import type { RedisHealth } from '../cluster/view.js';
import type { HubCounters } from '../streams/hub.js';

/**
 * The types of frames sent to clients, each with the index of its count in
 * `Metrics.out`: a socket counts every frame it sends, and an array indexed
 * by a constant is a plain element store where an object keyed by a
 * varying name was a megamorphic property lookup (2% of a chat message's
 * instructions, bench/instructions.ts). Listed in index order, so that
 * OUT_KINDS[i] names index i.
 */
export const OUT = Object.freeze({ ai_response: 0, typing_indicator: 1, error: 2, pong: 3, connection_status: 4, message: 5, stream: 6 });
export type OutKindName = keyof typeof OUT;
/** A frame type, as its index in `Metrics.out`. */
export type OutKind = (typeof OUT)[OutKindName];
/** The type names, by index. */
export const OUT_KINDS = Object.keys(OUT) as OutKindName[];

/**
 * How often the event-loop monitor samples (ms). Every sample wakes an idle
 * loop: on the reference machine a bare Node process spends about 7.6 ms of
 * CPU a second on a monitor at prom-client's default of 10 ms, 1.5 ms at
 * 50 ms. At 20 ms a stall of 20 ms or more is always seen, a shorter one
 * with a probability of its length over 20 ms.
 */
export const LAG_RESOLUTION_MS = 20;

/** Where the metrics read what other components count. */
export interface MetricSources {
  connections: () => number;
  bus: () => Bus | undefined;
  poolQueued: () => number;
  limits: () => LimitStats | undefined;
  /** Redis mode only. */
  redis?: () => RedisHealth;
  /** The AI circuit breaker: 0 closed, 1 half-open, 2 open (absent: no breaker, the echo engine). */
  breaker?: () => number;
  /** Open descriptors at the FdGuard's last check, and how often it stopped accepting. */
  fds?: () => { open: number; pauses: number };
  /** History on: what the streams hub counted. */
  streams?: () => HubCounters;
  /** The Telegram channel, when bots are configured: calls waiting in its outboxes. */
  telegramQueued?: () => number;
}

export class Metrics {
  readonly registry = new Registry();
  readonly connections: Gauge;
  readonly framesIn: Counter<'type'>;
  readonly framesOut: Counter<'type'>;
  readonly errors: Counter<'error'>;
  readonly closes: Counter<'code'>;
  readonly refused: Counter<'reason'>;
  /** Of the refused upgrades, those answered with a plain HTTP status and closed at once (no close frame). */
  readonly refusedAsHttp: Counter;
  readonly rateLimited: Counter<'limit'>;
  readonly slowConsumerCloses: Counter;
  readonly dropped: Counter<'type'>;
  readonly aiLatency: FastHistogram;
  readonly aiFailures: Counter<'reason'>;
  /** Stream appends that failed (the frame went to its socket without an offset). */
  readonly historyFailures: Counter;
  /** Telegram webhook updates, by outcome. */
  readonly telegramUpdates: Counter<'outcome'>;
  /** Telegram Bot API calls, by outcome (ok, failed, overflow), and the retries and 429 waits among them. */
  readonly telegramCalls: Counter<'outcome'>;

  /** Hot-path frame counts, by type: increment directly. */
  readonly in = { user_message: 0, ping: 0, invalid: 0 };
  /** Frames sent, by type: `out[OUT.pong]++` (see OUT). */
  readonly out = new Float64Array(OUT_KINDS.length);

  constructor(sources: MetricSources) {
    const r = this.registry;
    const worker = String(process.pid);
    // The process and runtime metrics operators expect of a Node service
    // (CPU, resident memory, heap, GC, handles, event-loop lag), per worker:
    // the label keeps each worker's series apart in the host's sum.
    collectDefaultMetrics({ register: r, labels: { worker }, eventLoopMonitoringPrecision: LAG_RESOLUTION_MS });
    this.connections = new Gauge({
      name: 'gateway_connections',
      help: 'Open widget sockets, by worker process',
      labelNames: ['worker'],
      registers: [r],
      collect() {
        this.set({ worker }, sources.connections());
      },
    });
    /** A collect() reporting the growth of the counts `read` gives, by type. */
    const counts = <K extends string>(types: readonly K[], read: (type: K) => number) => {
      const last = new Map<K, number>(types.map((k) => [k, 0]));
      return function collect(this: Counter<'type'>) {
        for (const k of types) {
          const now = read(k);
          const d = now - last.get(k)!;
          if (d > 0) this.inc({ type: k }, d);
          last.set(k, now);
        }
      };
    };
    this.framesIn = new Counter({
      name: 'gateway_frames_in_total',
      help: 'Client frames received, by type',
      labelNames: ['type'],
      registers: [r],
      collect: counts(Object.keys(this.in) as Array<keyof Metrics['in']>, (k) => this.in[k]),
    });
    this.framesOut = new Counter({
      name: 'gateway_frames_out_total',
      help: 'Frames sent to clients, by type',
      labelNames: ['type'],
      registers: [r],
      collect: counts(OUT_KINDS, (k) => this.out[OUT[k]]!),
    });
    this.errors = new Counter({ name: 'gateway_error_frames_total', help: 'Error frames sent, by error', labelNames: ['error'], registers: [r] });
    this.closes = new Counter({ name: 'gateway_closes_total', help: 'Sockets closed, by close code', labelNames: ['code'], registers: [r] });
    this.refused = new Counter({ name: 'gateway_upgrades_refused_total', help: 'Upgrades refused, by reason (the close code, or fd_limit); each refusal counted once', labelNames: ['reason'], registers: [r] });
    this.refusedAsHttp = new Counter({
      name: 'gateway_upgrades_refused_as_http_total',
      help: 'Refused upgrades answered with a plain HTTP status and closed at once instead of a close frame (past the lingering cap, or near the descriptor limit); each is also in gateway_upgrades_refused_total',
      registers: [r],
    });
    this.rateLimited = new Counter({ name: 'gateway_rate_limited_total', help: 'Messages refused by a rate limit', labelNames: ['limit'], registers: [r] });
    this.slowConsumerCloses = new Counter({ name: 'gateway_slow_consumer_closes_total', help: 'Sockets closed with 4009 (slow consumer)', registers: [r] });
    this.dropped = new Counter({ name: 'gateway_dropped_frames_total', help: 'Droppable frames skipped under backpressure, by type', labelNames: ['type'], registers: [r] });
    this.aiLatency = new FastHistogram(r, 'gateway_ai_request_seconds', 'AI engine request duration (successful requests)', [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]);
    this.aiFailures = new Counter({ name: 'gateway_ai_failures_total', help: 'AI engine failures, by reason', labelNames: ['reason'], registers: [r] });
    this.telegramUpdates = new Counter({ name: 'gateway_telegram_updates_total', help: 'Telegram webhook updates, by outcome (message, command, duplicate, ignored, malformed, unauthorized)', labelNames: ['outcome'], registers: [r] });
    this.telegramCalls = new Counter({ name: 'gateway_telegram_calls_total', help: 'Telegram Bot API calls, by outcome (ok, failed, overflow: refused by a full outbox; retried, throttled: a 5xx retried, a 429 waited)', labelNames: ['outcome'], registers: [r] });
    new Gauge({
      name: 'gateway_telegram_queued',
      help: 'Telegram calls waiting in the paced outboxes of the worker',
      labelNames: ['worker'],
      registers: [r],
      collect() {
        this.set({ worker }, sources.telegramQueued?.() ?? 0);
      },
    });
    this.historyFailures = new Counter({ name: 'gateway_history_append_failures_total', help: 'Session-stream appends the store could not take; the frame went to its socket without an offset', registers: [r] });

    /** A counter copied from a running total kept elsewhere. */
    const totalCounter = (name: string, help: string, read: () => number | undefined) => {
      let last = 0;
      new Counter({
        name,
        help,
        registers: [r],
        collect() {
          const now = read() ?? last;
          if (now > last) this.inc(now - last);
          last = now;
        },
      });
    };
    totalCounter('gateway_bus_published_total', 'Messages published to other nodes', () => sources.bus()?.stats().published);
    totalCounter('gateway_bus_delivered_total', 'Messages received from other nodes', () => sources.bus()?.stats().delivered);
    totalCounter('gateway_bus_dropped_total', 'Messages lost on the bus (at-most-once; e.g. Redis down)', () => sources.bus()?.stats().dropped);
    totalCounter('gateway_rate_limit_overflow_total', 'Keys that shared the overflow bucket because a rate-limit table was full', () => sources.limits()?.overflows);
    totalCounter('gateway_redis_publish_refused_total', 'Publishes and appends refused because Redis was down or REDIS_MAX_PENDING_BYTES waited for it (answered 503)', () => sources.redis?.().publishRefused);
    totalCounter('gateway_redis_publish_batched_total', 'Messages published inside a batch with others of the same turn and channel (one PUBLISH or SPUBLISH for several)', () => sources.redis?.().publishBatched);
    totalCounter('gateway_redis_subscriber_rebuilds_total', 'Redis Cluster subscriber clients replaced because their sharded subscriptions kept failing on a ready client (an ioredis fault; every wanted channel is made again on the new one)', () => sources.redis?.().subscriberRebuilds);
    totalCounter('gateway_registry_lease_lapses_total', "Lease renewals that found this node's lease gone (a stall past REGISTRY_LEASE_S); its entries were rewritten", () => sources.redis?.().leaseLapses);
    const failures = { command: 0, subscribe: 0, lease: 0, sweep: 0, registry_write: 0 };
    new Counter({
      name: 'gateway_redis_failures_total',
      help: 'Redis requests that failed or timed out, by kind (command, subscribe, lease, sweep, registry_write); each is logged and retried',
      labelNames: ['kind'],
      registers: [r],
      collect() {
        const now = sources.redis?.().failures;
        if (!now) return;
        for (const k of Object.keys(failures) as Array<keyof typeof failures>) {
          if (now[k] > failures[k]) this.inc({ kind: k }, now[k] - failures[k]);
          failures[k] = now[k];
        }
      },
    });
    new Gauge({
      name: 'gateway_redis_pending_bytes',
      help: 'Bytes of publishes and appends waiting for Redis (bounded by REDIS_MAX_PENDING_BYTES per worker)',
      registers: [r],
      collect() {
        this.set(sources.redis?.().pendingBytes ?? 0);
      },
    });
    new Gauge({
      name: 'gateway_redis_subscriptions_missing',
      help: 'Wanted Redis subscriptions not yet confirmed (readiness fails while one waits over a second)',
      registers: [r],
      collect() {
        this.set(sources.redis?.().subscriptionsMissing ?? 0);
      },
    });
    totalCounter('gateway_rate_limit_sync_failures_total', 'Budget batches the store (primary or Redis) could not take; limits were per worker meanwhile', () => sources.limits()?.syncFailures);
    new Gauge({
      name: 'gateway_rate_limit_keys',
      help: 'Keys with a rate-limit bucket, by kind',
      labelNames: ['kind'],
      registers: [r],
      collect() {
        for (const [kind, n] of Object.entries(sources.limits()?.keys ?? {})) this.set({ kind }, n);
      },
    });
    new Gauge({
      name: 'gateway_bus_up',
      help: '1 when the bus (IPC relay or Redis) is connected',
      registers: [r],
      aggregator: 'min',
      collect() {
        this.set(sources.bus()?.status === 'ready' ? 1 : 0);
      },
    });
    new Gauge({
      name: 'gateway_open_fds',
      help: 'Open file descriptors of the worker at the last check (near RLIMIT_NOFILE it refuses, then stops accepting)',
      labelNames: ['worker'],
      registers: [r],
      collect() {
        this.set({ worker }, sources.fds?.().open ?? 0);
      },
    });
    totalCounter('gateway_stream_gaps_filled_total', 'Gaps in a stream (a lost pub/sub message) filled from the history', () => sources.streams?.().gapsFilled);
    totalCounter('gateway_stream_chunks_merged_total', 'Streamed-answer chunks merged into a slow widget.v2 reader\'s next chunk instead of sent', () => sources.streams?.().chunksMerged);
    const labelled = (name: string, help: string, label: string, read: () => Record<string, number> | undefined) => {
      const last: Record<string, number> = {};
      new Counter({
        name,
        help,
        labelNames: [label],
        registers: [r],
        collect() {
          for (const [k, v] of Object.entries(read() ?? {})) {
            if (v > (last[k] ?? 0)) this.inc({ [label]: k }, v - (last[k] ?? 0));
            last[k] = v;
          }
        },
      });
    };
    labelled('gateway_stream_continuity_lost_total', 'continuity_lost frames sent to widget.v2 sockets, by stream (a resume that could not be served, or history lost)', 'stream', () => sources.streams?.().continuityLost);
    labelled('gateway_stream_resumes_total', 'widget.v2 resumes, by result (recovered, lost)', 'result', () => sources.streams?.().resumes);
    totalCounter('gateway_accept_pauses_total', 'Times a worker stopped accepting connections because it neared its descriptor limit', () => sources.fds?.().pauses);
    new Gauge({
      name: 'gateway_ai_breaker_state',
      help: 'The AI circuit breaker of the worst worker: 0 closed, 1 half-open (one probe), 2 open (failing fast)',
      registers: [r],
      aggregator: 'max',
      collect() {
        this.set(sources.breaker?.() ?? 0);
      },
    });
    new Gauge({
      name: 'gateway_pool_queued_frames',
      help: 'Frames waiting for or inside the validation pool',
      registers: [r],
      collect() {
        this.set(sources.poolQueued());
      },
    });
    // prom-client's own event-loop monitor, read (not a second one: each wakes
    // the loop every LAG_RESOLUTION_MS). Its collect, registered above, runs
    // first in a scrape: it sets the p99 since the last scrape, then resets.
    const p99 = r.getSingleMetric('nodejs_eventloop_lag_p99_seconds') as Gauge | undefined;
    new Gauge({
      name: 'gateway_event_loop_lag_p99_seconds',
      help: `p99 event-loop delay since the last scrape (worst worker; sampled every ${LAG_RESOLUTION_MS} ms)`,
      registers: [r],
      aggregator: 'max',
      async collect() {
        this.set((await p99?.get())?.values[0]?.value ?? 0);
      },
    });

  }

  close(): void {
    // Nothing to release: prom-client's collectors live as long as the process (its monitor's timer is unref'd).
  }
}

/**
 * A histogram without labels for the hot path: observe() walks the bounds
 * and adds three numbers (prom-client's Histogram converts and hashes its
 * labels on every observe: about 0.5 µs per chat answer in a worker's
 * profile, 3% of its CPU). It exports what prom-client's does (cumulative
 * `_bucket` series by `le`, then `_sum` and `_count`) and is summed across
 * workers the same way.
 */
export class FastHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly labelNames: string[] = [];
  /** Observations per bucket (not cumulative); the last: above every bound. */
  readonly #counts: Float64Array;
  #sum = 0;
  #count = 0;

  constructor(
    registry: Registry,
    readonly name: string,
    readonly help: string,
    readonly bounds: readonly number[],
  ) {
    this.#counts = new Float64Array(bounds.length + 1);
    registry.registerMetric(this as unknown as Metric);
  }

  /** One observation (seconds). */
  observe(value: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    this.#counts[i]! += 1;
    this.#sum += value;
    this.#count += 1;
  }

  /** What prom-client's registry reads (and sends to the primary). */
  get(): { name: string; help: string; type: string; aggregator: string; values: Array<{ value: number; labels: Record<string, number | string>; metricName: string }> } {
    const bucket = `${this.name}_bucket`;
    let below = 0;
    const values = this.bounds.map((le, i) => ({ value: (below += this.#counts[i]!), labels: { le } as Record<string, number | string>, metricName: bucket }));
    values.push({ value: this.#count, labels: { le: '+Inf' }, metricName: bucket });
    values.push({ value: this.#sum, labels: {}, metricName: `${this.name}_sum` }, { value: this.#count, labels: {}, metricName: `${this.name}_count` });
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.#counts.fill(0);
    this.#sum = 0;
    this.#count = 0;
  }
}

/** Every metric a worker exports, with its type, labels and help (the README's table, the dashboard test). */
export function describeMetrics(): Array<{ name: string; type: string; labels: string[]; help: string }> {
  const m = new Metrics({ connections: () => 0, bus: () => undefined, poolQueued: () => 0, limits: () => undefined });
  try {
    return m.registry.getMetricsAsArray().map((x) => {
      const o = x as unknown as { name: string; help: string; type: string; labelNames?: string[] };
      return { name: o.name, type: o.type, labels: o.name.startsWith('gateway_') ? (o.labelNames ?? []) : ['worker'], help: o.help };
    });
  } finally {
    m.close();
  }
}
