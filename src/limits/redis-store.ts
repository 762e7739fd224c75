/**
 * The rate-limit store on Redis, shared by every host: one key per bucket
 * holding its TAT in microseconds of Redis's own clock (so hosts' clocks
 * need not agree), charged by one Lua script per batch. Keys expire when
 * their bucket is full again.
 */
import type { Redis } from 'ioredis';
import type { ChargeBatch, RateStore } from './store.js';

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

export class RedisRateStore implements RateStore {
  constructor(
    private readonly client: Redis,
    private readonly prefix: string,
  ) {
    client.defineCommand('gwRateCharge', { lua: CHARGE });
  }

  async charge(b: ChargeBatch): Promise<number[]> {
    if (b.keys.length === 0) return [];
    const keys = b.keys.map((k) => `${this.prefix}rl:${b.kind}:${k}`);
    const run = (this.client as unknown as { gwRateCharge(n: number, ...args: Array<string | number>): Promise<number[]> }).gwRateCharge;
    return run.call(this.client, keys.length, ...keys, b.intervalUs, ...b.counts);
  }

  async close(): Promise<void> {
    await this.client.quit().catch(() => this.client.disconnect());
  }
}
