import type { Clock } from '../../ports/clock.js';
import { ConditionFailedError, type Store } from '../../ports/store.js';
import { RateLimitedError } from '../errors.js';

/** At most `limit` requests per `windowSeconds`. A limit of 0 turns the rule off. */
export interface RateRule {
  limit: number;
  windowSeconds: number;
}

/**
 * The scopes requests are counted in. Each request is counted once in every scope that applies:
 *
 *   address         every route, per source address (before any authentication: cheap refusal)
 *   key             application routes, per API key
 *   node            agent routes, per signed node id (after the signature verified)
 *   register        `POST /v1/nodes`, per source address
 *   registerGlobal  `POST /v1/nodes`, all sources together
 */
export type RateScope = 'address' | 'key' | 'node' | 'register' | 'registerGlobal';

export type RateLimitSettings = Record<RateScope, RateRule>;

/**
 * Defaults: far above what one honest agent or CLI sends (an agent heartbeats every 5 s and holds
 * one long poll), low enough that a flood from one address or key is refused within a minute.
 * Registration is rare (once per agent start), so its limits are tight; the global one bounds what
 * a botnet of addresses can mint (main accepted 10,000 registrations in 53 s).
 */
export const defaultRateLimits: RateLimitSettings = {
  address: { limit: 1200, windowSeconds: 60 },
  key: { limit: 600, windowSeconds: 60 },
  node: { limit: 600, windowSeconds: 60 },
  register: { limit: 10, windowSeconds: 60 },
  registerGlobal: { limit: 120, windowSeconds: 60 },
};

/** The counter's stored shape. */
interface Counter {
  count: number;
}

/** How often a contended counter is re-read before the request is refused. */
const maxAttempts = 12;

/** A random pause before re-reading a contended counter, growing with the attempt (at most 64 ms). */
const jitter = (attempt: number) =>
  new Promise<void>((resolve) => setTimeout(resolve, Math.random() * Math.min(64, 2 ** attempt)));

/**
 * Fixed-window counters in the Store, so that every deployment shares them (SQLite embedded,
 * DynamoDB in the cloud, where many Lambda sandboxes count together).
 *
 *   pk = RATE#<scope>#<id>    sk = <window start, epoch s>    data = { count }    expiresAt = window end + 60 s
 *
 * A request reads the current window's counter and writes count + 1 conditioned on the version it
 * read (0 when the window has no counter yet), retrying a bounded number of times when another
 * request got there first (after a short random pause). The item expires shortly after its window, so counters cost no
 * cleanup. A fixed window lets through at most twice the limit across a window boundary; that is
 * the price of one item per window (a sliding window would read two).
 *
 * Under heavy contention on one counter (a flood on the global registration limit) the request
 * that cannot get a write in after {@link maxAttempts} tries is refused as limited: contention on
 * a counter means its scope is busy, and refusing is what the limit is for.
 */
export class RateLimiter {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly settings: RateLimitSettings,
  ) {}

  /**
   * Counts one request in `scope` for `id`.
   *
   * @throws {@link RateLimitedError} (`rate_limited`, with the seconds until the window ends) when
   * the window already holds `limit` requests; the refused request is not counted.
   */
  async consume(scope: RateScope, id: string): Promise<void> {
    const rule = this.settings[scope];
    if (rule.limit <= 0) return;
    const now = this.clock.now();
    const windowStart = Math.floor(now / 1000 / rule.windowSeconds) * rule.windowSeconds;
    const windowEnd = windowStart + rule.windowSeconds;
    const retryAfter = Math.max(1, Math.ceil(windowEnd - now / 1000));
    const key = { pk: `RATE#${scope}#${id}`, sk: String(windowStart) };
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      const item = await this.store.get<Counter>(key);
      const count = item?.data.count ?? 0;
      if (count >= rule.limit) throw limited(scope, rule, retryAfter);
      try {
        await this.store.transact([
          {
            kind: 'put',
            key,
            data: { count: count + 1 } satisfies Counter,
            expiresAt: windowEnd + 60,
            expectVersion: item?.version ?? 0,
          },
        ]);
        return;
      } catch (error) {
        if (!(error instanceof ConditionFailedError)) throw error;
      }
      await jitter(attempt);
    }
    throw limited(scope, rule, retryAfter);
  }
}

function limited(scope: RateScope, rule: RateRule, retryAfter: number): RateLimitedError {
  return new RateLimitedError(
    'rate_limited',
    `too many requests (${scope}: at most ${rule.limit} per ${rule.windowSeconds} s); retry in ${retryAfter} s`,
    retryAfter,
    { scope, limit: rule.limit, windowSeconds: rule.windowSeconds },
  );
}

const scopes: readonly RateScope[] = ['address', 'key', 'node', 'register', 'registerGlobal'];

/**
 * Reads limits written as `scope=limit/seconds` pairs, comma-separated, over the defaults:
 * `GPUAI_RATE_LIMITS=register=5/60,address=0` (embedded) or `RATE_LIMITS` (Lambda). A limit of
 * 0 turns that scope off, so it needs no window: `scope=0` reads as `scope=0/<default seconds>`.
 *
 * @throws Error naming the pair it cannot read.
 */
export function parseRateLimits(text: string, base: RateLimitSettings = defaultRateLimits): RateLimitSettings {
  const settings = { ...base };
  for (const pair of text.split(',').map((p) => p.trim())) {
    if (pair === '') continue;
    const off = /^([A-Za-z]+)=0+$/.exec(pair);
    const match = off ?? /^([A-Za-z]+)=(\d{1,9})\/(\d{1,7})$/.exec(pair);
    const scope = scopes.find((s) => s === match?.[1]);
    if (match === null || scope === undefined || (off === null && Number(match[3]) < 1)) {
      throw new Error(
        `cannot read "${pair}": expected <scope>=<limit>/<seconds> or <scope>=0 (off), scope one of ${scopes.join(', ')}`,
      );
    }
    settings[scope] =
      off === null ? { limit: Number(match[2]), windowSeconds: Number(match[3]) } : { ...settings[scope], limit: 0 };
  }
  return settings;
}
