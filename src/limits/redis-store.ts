/**
 * The rate-limit store on Redis, shared by every host: one key per bucket
 * holding its TAT in microseconds of Redis's own clock (so hosts' clocks
 * need not agree), charged by one Lua script per batch. Keys expire when
 * their bucket is full again. After each batch that charged something, the
 * charged keys are published (msgpackr, tagged with this node's id) on one
 * channel that every node listens to, so the others adopt them.
 */
import type { Redis } from 'ioredis';
import { Packr } from 'msgpackr';
import { chargedUpdate, type ChargeBatch, type RateStore, type RateUpdate } from './store.js';

/** KEYS: bucket keys. ARGV[1]: interval (us); ARGV[1 + i]: takes on key i. Returns us ahead of now per key. */
const CHARGE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local n = tonumber(ARGV[i + 1])
  if n > 0 then
    tat = tat + n * interval
    redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
  end
  out[i] = math.floor(tat - now)
end
return out
`;

const packr = new Packr({ useRecords: false });

type Wire = [origin: string, kind: string, keys: string[], aheadUs: number[]];

export class RedisRateStore implements RateStore {
  readonly #channel: string;
  #listener: ((u: RateUpdate) => void) | undefined;

  /** `client` runs the script and publishes; `subscriber` (a connection of its own) listens; both are closed by close(). */
  constructor(
    private readonly client: Redis,
    private readonly subscriber: Redis,
    private readonly prefix: string,
    private readonly nodeId: string,
  ) {
    client.defineCommand('gwRateCharge', { lua: CHARGE });
    this.#channel = `${prefix}rl:updates`;
    subscriber.on('messageBuffer', (channel: Buffer, message: Buffer) => {
      if (this.#listener === undefined || channel.toString() !== this.#channel) return;
      let w: Wire;
      try {
        w = packr.unpack(message) as Wire;
      } catch {
        return; // not ours: ignore
      }
      if (Array.isArray(w) && w[0] !== this.nodeId) this.#listener({ kind: w[1], keys: w[2], aheadUs: w[3] });
    });
  }

  async charge(b: ChargeBatch): Promise<number[]> {
    if (b.keys.length === 0) return [];
    const keys = b.keys.map((k) => `${this.prefix}rl:${b.kind}:${k}`);
    const run = (this.client as unknown as { gwRateCharge(n: number, ...args: Array<string | number>): Promise<number[]> }).gwRateCharge;
    const ahead = await run.call(this.client, keys.length, ...keys, b.intervalUs, ...b.counts);
    const u = chargedUpdate(b, ahead);
    if (u) void this.client.publish(this.#channel, packr.pack([this.nodeId, u.kind, u.keys, u.aheadUs] satisfies Wire)).catch(() => {});
    return ahead;
  }

  onUpdate(listener: (u: RateUpdate) => void): void {
    this.#listener = listener;
    void this.subscriber.subscribe(this.#channel).catch(() => {});
  }

  async close(): Promise<void> {
    await Promise.all([this.client, this.subscriber].map((c) => c.quit().catch(() => c.disconnect())));
  }
}
