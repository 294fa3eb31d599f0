/**
 * Seeded randomness for the benchmarks: every figure a bench prints must be reproducible from its
 * seed, so nothing under bench/ calls Math.random. sfc32 is small, fast and passes PractRand far
 * beyond what a simulation draws; `hashUnit` gives a draw keyed by ids instead of by call order,
 * so two policies that visit events in different orders still see the same luck per task attempt.
 */
export interface Random {
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform integer in [0, n). */
  int(n: number): number;
  /** Exponentially distributed with the given mean. */
  exponential(mean: number): number;
  /** Log-normal with the given median and sigma of the underlying normal. */
  logNormal(median: number, sigma: number): number;
  /** One element of a non-empty list. */
  pick<T>(items: readonly T[]): T;
  /** An index drawn with the given (non-negative, not all zero) weights. */
  weighted(weights: readonly number[]): number;
}

export function seededRandom(seed: number): Random {
  let a = 0x9e3779b9 ^ seed;
  let b = 0x243f6a88 + Math.imul(seed, 0x85ebca6b);
  let c = 0xb7e15162 ^ Math.imul(seed, 0xc2b2ae35);
  let d = 1;
  const next = (): number => {
    a |= 0;
    b |= 0;
    c |= 0;
    d |= 0;
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 16; i++) next();
  const normal = (): number => {
    const u = 1 - next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * next());
  };
  return {
    next,
    int: (n) => Math.floor(next() * n),
    exponential: (mean) => -Math.log(1 - next()) * mean,
    logNormal: (median, sigma) => median * Math.exp(sigma * normal()),
    pick: <T>(items: readonly T[]): T => {
      const item = items[Math.floor(next() * items.length)];
      if (item === undefined) throw new Error('pick from an empty list');
      return item;
    },
    weighted: (weights) => {
      const total = weights.reduce((sum, w) => sum + w, 0);
      let target = next() * total;
      for (let i = 0; i < weights.length; i++) {
        target -= weights[i] ?? 0;
        if (target < 0) return i;
      }
      return weights.length - 1;
    },
  };
}

/** A uniform draw in [0, 1) that depends only on its integer keys (murmur3's finaliser over them). */
export function hashUnit(seed: number, ...keys: number[]): number {
  let h = seed ^ 0x2545f491;
  for (const key of keys) {
    h = Math.imul(h ^ key, 0xcc9e2d51);
    h = (h << 15) | (h >>> 17);
    h = Math.imul(h, 0x1b873593) ^ 0xe6546b64;
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 4294967296;
}
