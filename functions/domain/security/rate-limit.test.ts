import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../../test/support/in-process.js';
import { openDatabase } from '../../adapters/embedded/sqlite.js';
import { SqliteStore } from '../../adapters/embedded/sqlite-store.js';
import type { Store } from '../../ports/store.js';
import { RateLimitedError } from '../errors.js';
import { defaultRateLimits, parseRateLimits, RateLimiter, type RateLimiterOptions } from './rate-limit.js';

function limiter(limit: number, windowSeconds = 60, options: RateLimiterOptions = {}) {
  const clock = new ManualClock(Date.parse('2026-11-25T12:00:00Z'));
  const store = new SqliteStore(openDatabase(':memory:'), clock);
  const settings = { ...defaultRateLimits, address: { limit, windowSeconds } };
  return { clock, store, settings, limiter: new RateLimiter(store, clock, settings, options) };
}

const refusal = (p: Promise<void>) => p.then(() => undefined).catch((e: unknown) => e as RateLimitedError);

describe.each([
  ['exclusive store (in memory)', true],
  ['shared store (adds)', false],
])('RateLimiter, %s: the same windows, limits and Retry-After', (_mode, exclusiveStore) => {
  it('allows `limit` per window, refuses the next with the seconds left, resets with the window', async () => {
    const { clock, limiter: l } = limiter(3, 60, { exclusiveStore });
    for (let i = 0; i < 3; i++) await l.consume('address', 'a');
    expect((await refusal(l.consume('address', 'a')))?.retryAfterSeconds).toBe(60);
    await l.consume('address', 'b');
    clock.advance(59_500);
    expect((await refusal(l.consume('address', 'a')))?.retryAfterSeconds).toBe(1);
    clock.advance(500);
    await l.consume('address', 'a');
  });

  it('counts concurrent requests exactly once up to the limit', async () => {
    const { limiter: l } = limiter(20, 60, { exclusiveStore });
    const outcomes = await Promise.allSettled(Array.from({ length: 30 }, () => l.consume('address', 'x')));
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(20);
  });
});

describe('RateLimiter, exclusive store', () => {
  it('writes and reads nothing in the store', async () => {
    const { store, limiter: l } = limiter(2, 60, { exclusiveStore: true });
    await l.consume('address', 'a');
    await l.consume('address', 'a');
    await expect(l.consume('address', 'a')).rejects.toBeInstanceOf(RateLimitedError);
    expect(await store.query({ pk: 'RATE#address#a' })).toMatchObject({ items: [] });
  });

  it('keeps at most maxTallies counters, forgetting the least recently counted', async () => {
    const { limiter: l } = limiter(1, 60, { exclusiveStore: true, maxTallies: 100 });
    await l.consume('address', 'kept');
    for (let i = 0; i < 1000; i++) {
      await l.consume('address', `flood-${i}`);
      // `kept` is refused each time it asks, which keeps it recently used.
      if (i % 50 === 0) await expect(l.consume('address', 'kept')).rejects.toBeInstanceOf(RateLimitedError);
    }
    expect(l.tallies).toBe(100);
    // An id forgotten under the bound starts its window again: it is let through, never refused wrongly.
    await l.consume('address', 'flood-0');
  });
});

describe('RateLimiter, shared store', () => {
  it('reads a counter back only as it nears its limit; an honest caller costs one add and no read', async () => {
    const { store, settings, clock } = limiter(600);
    const reads: string[] = [];
    const counting: Store = {
      get: (key) => {
        reads.push(key.pk);
        return store.get(key);
      },
      query: (options) => store.query(options),
      transact: (writes) => store.transact(writes),
      close: () => store.close(),
    };
    const l = new RateLimiter(counting, clock, settings);
    for (let i = 0; i < 36; i++) await l.consume('address', 'honest');
    expect(reads).toEqual([]);
    await l.consume('address', 'honest');
    expect(reads).toEqual(['RATE#address#honest']); // 600/16 = 37 adds, then a read
  });

  it('holds a limit across instances counting together, within 1/spread of it per instance', async () => {
    const { clock, store, settings } = limiter(64);
    const sandboxes = [0, 1, 2, 3].map(() => new RateLimiter(store, clock, settings));
    let allowed = 0;
    for (let i = 0; i < 400; i++) {
      const outcome = await refusal(sandboxes[i % 4]?.consume('address', 'flood') ?? Promise.resolve());
      if (outcome === undefined) allowed++;
    }
    expect(allowed).toBeGreaterThanOrEqual(64);
    expect(allowed).toBeLessThanOrEqual(64 + 4 * (64 / 16));
    // Once every instance has read the counter full, none asks the store again in this window.
    const before = (await store.get<{ count: number }>({ pk: 'RATE#address#flood', sk: String(clock.now() / 1000) }))
      ?.data.count;
    for (const s of sandboxes) await expect(s.consume('address', 'flood')).rejects.toBeInstanceOf(RateLimitedError);
    const after = (await store.get<{ count: number }>({ pk: 'RATE#address#flood', sk: String(clock.now() / 1000) }))
      ?.data.count;
    expect(after).toBe(before);
  });
});

describe('RateLimiter', () => {
  it('allows `limit` requests per window, refuses the next without counting it, and resets with the window', async () => {
    const { clock, store, limiter: l } = limiter(3);
    for (let i = 0; i < 3; i++) await l.consume('address', 'a');
    const refused = await l.consume('address', 'a').catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(RateLimitedError);
    expect((refused as RateLimitedError).retryAfterSeconds).toBe(60);
    const counter = await store.get<{ count: number }>({
      pk: 'RATE#address#a',
      sk: String(Date.parse('2026-11-25T12:00:00Z') / 1000),
    });
    expect(counter?.data.count).toBe(3);
    expect(counter?.expiresAt).toBe(Date.parse('2026-11-25T12:01:00Z') / 1000 + 60);

    clock.advance(59_500);
    expect(((await l.consume('address', 'a').catch((e: unknown) => e)) as RateLimitedError).retryAfterSeconds).toBe(1);
    clock.advance(500);
    await l.consume('address', 'a');
  });

  it('keeps ids apart and is off at limit 0', async () => {
    const { limiter: l } = limiter(1);
    await l.consume('address', 'a');
    await l.consume('address', 'b');
    await expect(l.consume('address', 'a')).rejects.toBeInstanceOf(RateLimitedError);
    const off = limiter(0).limiter;
    for (let i = 0; i < 50; i++) await off.consume('address', 'a');
  });

  it('counts every concurrent request exactly once up to the limit', async () => {
    const { limiter: l } = limiter(20);
    const outcomes = await Promise.allSettled(Array.from({ length: 30 }, () => l.consume('address', 'x')));
    const allowed = outcomes.filter((o) => o.status === 'fulfilled').length;
    // Contended writes retry after a random pause: the limit is reached, never passed.
    expect(allowed).toBe(20);
    for (const o of outcomes) if (o.status === 'rejected') expect(o.reason).toBeInstanceOf(RateLimitedError);
  });
});

describe('parseRateLimits', () => {
  it('reads scope=limit/seconds over the defaults', () => {
    const settings = parseRateLimits('register=5/60, key=100/10');
    expect(settings.register).toEqual({ limit: 5, windowSeconds: 60 });
    expect(settings.key).toEqual({ limit: 100, windowSeconds: 10 });
    expect(settings.node).toEqual(defaultRateLimits.node);
  });

  it('takes a bare 0 as "off", as the README says, and 0/<seconds> too', async () => {
    expect(parseRateLimits('address=0').address.limit).toBe(0);
    expect(parseRateLimits('address=0/60').address.limit).toBe(0);
    const clock = new ManualClock(Date.parse('2026-11-25T12:00:00Z'));
    const store = new SqliteStore(openDatabase(':memory:'), clock);
    const off = new RateLimiter(store, clock, parseRateLimits('address=0'));
    for (let i = 0; i < 5; i++) await off.consume('address', 'a');
  });

  it.each(['address=5', 'address=5/0', 'address=off', 'nope=1/60', 'address=0/'])('refuses %s, naming it', (text) => {
    expect(() => parseRateLimits(text)).toThrow(`cannot read "${text}"`);
  });
});
