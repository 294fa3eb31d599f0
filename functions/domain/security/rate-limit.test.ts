import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../../test/support/in-process.js';
import { openDatabase } from '../../adapters/embedded/sqlite.js';
import { SqliteStore } from '../../adapters/embedded/sqlite-store.js';
import { RateLimitedError } from '../errors.js';
import { defaultRateLimits, parseRateLimits, RateLimiter } from './rate-limit.js';

function limiter(limit: number, windowSeconds = 60) {
  const clock = new ManualClock(Date.parse('2026-11-25T12:00:00Z'));
  const store = new SqliteStore(openDatabase(':memory:'), clock);
  const settings = { ...defaultRateLimits, address: { limit, windowSeconds } };
  return { clock, store, limiter: new RateLimiter(store, clock, settings) };
}

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
