/** Percentiles over merged latency samples. */
export function percentiles(samples: number[]): { p50: number; p99: number; max: number } {
  if (samples.length === 0) return { p50: NaN, p99: NaN, max: NaN };
  const s = Float64Array.from(samples).sort();
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { p50: at(0.5), p99: at(0.99), max: s[s.length - 1]! };
}

export const fmt = (n: number, digits = 0): string =>
  Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '-';

export const ratio = (a: number, b: number): string => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}x` : '-');

export const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

/** `list` rotated left by `k`: round k of a benchmark starts with another server, so drift of the machine does not favour one. */
export const rotate = <T>(list: readonly T[], k: number): T[] => list.map((_, i) => list[(i + k) % list.length]!);

/**
 * Measures each of `setups` once per round, `rounds` rounds, each round in
 * the order rotated by its number (drift of the machine does not favour
 * one); each setup's results, in round order, at the setup's index.
 */
export async function inRounds<S, R>(rounds: number, setups: readonly S[], measure: (setup: S, round: number) => Promise<R>): Promise<R[][]> {
  const out = setups.map((): R[] => []);
  for (let round = 0; round < rounds; round++) {
    for (const i of rotate([...setups.keys()], round)) out[i]!.push(await measure(setups[i]!, round));
  }
  return out;
}

/** Each round's ratio of a to b, e.g. "0.65x / 0.63x". */
export const ratios = (a: number[], b: number[] | undefined): string => (b ? a.map((x, i) => ratio(x, b[i] ?? NaN)).join(' / ') : '-');
