import type { Clock } from '../../ports/clock.js';
import type { Store } from '../../ports/store.js';
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

/** What one process knows of one counter in its current window. */
interface Tally {
  /** Window start, epoch seconds: a tally of an earlier window is stale. */
  windowStart: number;
  /** Exclusive store: the window's count. Shared store: a lower bound (last read + own adds since). */
  count: number;
  /** Shared store: this process's adds since it last read the counter. */
  sinceRead: number;
  /** Shared store: how many own adds may pass before the next read (see {@link RateLimiter}). */
  readEvery: number;
}

export interface RateLimiterOptions {
  /**
   * This process is the only one counting (the embedded deployment, `exclusiveStore`): counters
   * live in memory and cost no store call. Otherwise they live in the store (default).
   */
  exclusiveStore?: boolean;
  /** The most counters kept in memory; the least recently used is forgotten first (default 100,000). */
  maxTallies?: number;
  /**
   * Shared store: the number of instances a flood is assumed to be spread over. Each instance
   * reads a counter back after 1/`spread` of the headroom it last saw (default 16).
   */
  spread?: number;
}

/**
 * Fixed-window counters: at most `limit` requests per window per scope and id.
 *
 * **Exclusive store (embedded).** One process counts every request, so the counters are a map in
 * memory: no store call at all (they used to cost a GetItem and a conditional PutItem per scope
 * per request, a heartbeat's second write). Exact; forgotten on restart (a fresh window). Memory
 * is bounded by `maxTallies` (about 400 bytes each, 40 MB at the default 100,000): beyond it the
 * least recently counted id is forgotten, which can only let that id start its window again, never
 * refuse an honest caller; a flooding id is counted all the time, so it is the last forgotten.
 *
 * **Shared store (Lambda).** Many sandboxes count together in the Store:
 *
 *   pk = RATE#<scope>#<id>    sk = <window start, epoch s>    data = { count }    expiresAt = window end + 60 s
 *
 * Each request is one `add` of 1 (an UpdateItem ADD: no condition, no read, never contended, never
 * retried); the item expires shortly after its window, so counters cost no cleanup. The add
 * returns nothing, and a read per request would cost what the old read-then-conditional-put did,
 * so a counter is read back only when it may be near its limit, judged by what this sandbox knows:
 *
 * - the count it last read plus its own adds since is a lower bound (counts only grow in a
 *   window); once that bound reaches the limit, the window is full and further requests are
 *   refused with no store call at all until the window ends;
 * - it reads the counter again after its own adds since the last read reach 1/`spread` of the
 *   headroom that read showed (limit 600, spread 16: every 37 adds at first, every add near the
 *   limit). A read showing more than the limit refuses the request (it is counted, harmlessly:
 *   the window is full anyway) and every later one.
 *
 * An honest caller (an agent sends a few requests a minute against 600) therefore costs one add
 * and no read. A flood spread over P sandboxes passes the limit by at most about P/`spread` of the
 * limit before every sandbox has read it full (one sandbox, as in tests: exact). The fixed window
 * itself already lets up to twice the limit through across a window boundary; that is the price
 * of one item per window (a sliding window would read two).
 */
export class RateLimiter {
  readonly #tallies = new Map<string, Tally>();
  readonly #exclusive: boolean;
  readonly #maxTallies: number;
  readonly #spread: number;

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly settings: RateLimitSettings,
    options: RateLimiterOptions = {},
  ) {
    this.#exclusive = options.exclusiveStore ?? false;
    this.#maxTallies = Math.max(1, options.maxTallies ?? 100_000);
    this.#spread = Math.max(1, options.spread ?? 16);
  }

  /** Counters held in memory now (at most `maxTallies`). */
  get tallies(): number {
    return this.#tallies.size;
  }

  /**
   * Counts one request in `scope` for `id`.
   *
   * @throws {@link RateLimitedError} (`rate_limited`, with the seconds until the window ends) when
   * the window already holds `limit` requests; the refused request is not counted (shared store:
   * unless its own read-back found the window over its limit).
   */
  async consume(scope: RateScope, id: string): Promise<void> {
    const rule = this.settings[scope];
    if (rule.limit <= 0) return;
    const now = this.clock.now();
    const windowStart = Math.floor(now / 1000 / rule.windowSeconds) * rule.windowSeconds;
    const windowEnd = windowStart + rule.windowSeconds;
    const retryAfter = Math.max(1, Math.ceil(windowEnd - now / 1000));
    const tally = this.#tally(`${scope}#${id}`, windowStart, rule.limit);
    // Counts never fall within a window: a full one refuses without asking the store.
    if (tally.count >= rule.limit) throw limited(scope, rule, retryAfter);
    // Counted before any await, so concurrent requests in this process see each other.
    tally.count++;
    if (this.#exclusive) return;

    tally.sinceRead++;
    const readDue = tally.sinceRead >= tally.readEvery;
    if (readDue) tally.sinceRead = 0;
    const key = { pk: `RATE#${scope}#${id}`, sk: String(windowStart) };
    await this.store.transact([
      { kind: 'add', key, fields: { count: 1 } satisfies Counter, expiresAt: windowEnd + 60 },
    ]);
    if (!readDue) return;
    const count = (await this.store.get<Counter>(key))?.data.count ?? 0;
    if (tally.windowStart === windowStart) {
      tally.count = Math.max(tally.count, count);
      tally.readEvery = this.#readEvery(rule.limit, count);
    }
    if (count > rule.limit) throw limited(scope, rule, retryAfter);
  }

  /** The tally of `key` in this window, made most recently used; the least recently used goes past the bound. */
  #tally(key: string, windowStart: number, limit: number): Tally {
    let tally = this.#tallies.get(key);
    if (tally !== undefined) this.#tallies.delete(key);
    if (tally === undefined || tally.windowStart !== windowStart) {
      tally = { windowStart, count: 0, sinceRead: 0, readEvery: this.#readEvery(limit, 0) };
    }
    this.#tallies.set(key, tally);
    if (this.#tallies.size > this.#maxTallies) {
      const oldest = this.#tallies.keys().next().value;
      if (oldest !== undefined) this.#tallies.delete(oldest);
    }
    return tally;
  }

  /** Own adds between reads: 1/spread of the headroom last seen, at least one. */
  #readEvery(limit: number, count: number): number {
    return Math.max(1, Math.floor((limit - count) / this.#spread));
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
