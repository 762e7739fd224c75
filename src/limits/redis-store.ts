/**
 * The rate-limit store on Redis, shared by every host: one key per bucket
 * holding its TAT in microseconds of Redis's own clock (so hosts' clocks
 * need not agree), charged by one Lua script per batch. Keys expire when
 * their bucket is full again. After each batch that charged something, the
 * charged keys are published (msgpackr, tagged with this node's id) on one
 * channel that every node listens to, so the others adopt them.
 */
import { Packr } from 'msgpackr';
import type { RedisLink } from '../redis/link.js';
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
  readonly #keyPrefix: string;
  #listener: ((u: RateUpdate) => void) | undefined;

  /** Runs its script and publishes on the worker's RedisLink (which it does not close). */
  constructor(
    private readonly link: RedisLink,
    prefix: string,
    private readonly nodeId: string,
  ) {
    link.cmd.defineCommand('gwRateCharge', { lua: CHARGE });
    this.#channel = `${prefix}rl:updates`;
    this.#keyPrefix = link.sharded ? `${prefix}{rl}:` : `${prefix}rl:`;
    link.sub.on(this.#channel, (channel: Buffer, message: Buffer) => {
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
    // On a Cluster the keys of one batch share the {rl} hash tag: the script touches one slot.
    const keys = b.keys.map((k) => `${this.#keyPrefix}${b.kind}:${k}`);
    const ahead = await this.link.run('rate-limit charge', (c) =>
      (c as unknown as { gwRateCharge(n: number, ...args: Array<string | number>): Promise<number[]> }).gwRateCharge(keys.length, ...keys, b.intervalUs, ...b.counts),
    );
    const u = chargedUpdate(b, ahead);
    if (u) this.link.publish(this.#channel, packr.pack([this.nodeId, u.kind, u.keys, u.aheadUs] satisfies Wire));
    return ahead;
  }

  /** Listens for the other nodes' charges: a wanted subscription, made whenever Redis is reachable (readiness waits for it). */
  onUpdate(listener: (u: RateUpdate) => void): void {
    this.#listener = listener;
    this.link.sub.want(this.#channel);
  }

  async close(): Promise<void> {
    this.#listener = undefined;
    this.link.sub.unwant(this.#channel);
  }
}
