/**
 * The one retry policy of the control plane: a bounded number of attempts, jittered exponential
 * back-off between them, and a total budget of waiting. Each kind of fault has exactly one layer
 * that retries it, so retries never multiply for the same fault:
 *
 *   fault                                   retried by                     attempts
 *   ─────────────────────────────────────   ────────────────────────────   ─────────────────────────────
 *   stale read (a version condition fails)  updateWithRetry (records.ts)   retryPolicies.staleRead
 *   a transaction lost a race (conflict,    DynamoDbStore                  retryPolicies.transactionRace
 *     throttled reason in a cancellation)
 *   throttling, 5xx, network of one call    the AWS SDK (clients.ts)       sdkMaxAttempts
 *
 * Faults of different kinds can still follow one another inside one operation, so the worst case
 * of one `updateWithRetry` on DynamoDB is the product, documented here and asserted by the tests:
 * `staleRead.maxAttempts` rounds of (one read + up to `transactionRace.maxAttempts` writes), each
 * store call at most `sdkMaxAttempts` HTTP requests: 4 × (1 + 3) × 3 = 48 requests, where the
 * stacked loops before this module allowed 8 × (1 + 4) × 3 = 120, the domain's 8 without any pause.
 *
 * @module
 */

/** How often, and how patiently, one layer retries one kind of fault. */
export interface RetryPolicy {
  /** Attempts in all, the first included. */
  readonly maxAttempts: number;
  /** The cap of the first back-off; each further one doubles it, up to {@link maxDelayMs}. */
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** Waiting in all between attempts; a back-off that would pass it ends the retries instead. */
  readonly budgetMs: number;
}

export const retryPolicies = {
  /**
   * A read-modify-write whose version condition failed: another writer changed the item, so read
   * it again. Four rounds: more than that means a hot item, which waiting longer in a request or a
   * queue message does not cool; the caller's retry (HTTP 503 + Retry-After, a redelivery) does.
   */
  staleRead: { maxAttempts: 4, baseDelayMs: 10, maxDelayMs: 200, budgetMs: 500 },
  /**
   * A DynamoDB transaction cancelled because another one held an item, or throttled: the same
   * write may pass once the other transaction is done.
   */
  transactionRace: { maxAttempts: 3, baseDelayMs: 25, maxDelayMs: 200, budgetMs: 400 },
} as const satisfies Record<string, RetryPolicy>;

/**
 * HTTP requests the AWS SDK makes for one call, the first included (its standard mode, which
 * backs off with jitter and spends from a retry quota so a failing service is not hammered).
 */
export const sdkMaxAttempts = 3;

/**
 * The pause before retry number `retry` (1 for the first retry): "full jitter", a uniform draw
 * below the exponential cap, which spreads racing writers apart instead of making them collide
 * again in step (AWS Architecture Blog, "Exponential Backoff and Jitter").
 */
export function backoffDelayMs(policy: RetryPolicy, retry: number, random: () => number = Math.random): number {
  const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (retry - 1));
  return Math.floor(random() * cap);
}

export interface RetryOptions {
  policy: RetryPolicy;
  /** Whether this error is the fault the policy retries; any other error is thrown at once. */
  retryOn: (error: unknown) => boolean;
  /** The error to throw once the attempts or the budget are spent, given the last fault. */
  giveUp: (lastError: unknown, attempts: number) => Error;
  /** Tests pass their own to count and skip the pauses. */
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
}

const sleepFor = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Runs `operation` until it succeeds, fails with an error `retryOn` refuses, or the policy is
 * spent (then throws `giveUp`'s error). `operation` is told its attempt number, from 1.
 *
 * @example
 * await retrying(() => client.send(command), {
 *   policy: retryPolicies.transactionRace,
 *   retryOn: isConflict,
 *   giveUp: (cause, n) => new ContentionError(`lost ${n} races`, { cause }),
 * });
 */
export async function retrying<T>(operation: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const { policy, retryOn, giveUp, sleep = sleepFor, random = Math.random } = options;
  let waited = 0;
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation(attempt);
    } catch (error) {
      if (!retryOn(error)) throw error;
      const delay = backoffDelayMs(policy, attempt, random);
      if (attempt >= policy.maxAttempts || waited + delay > policy.budgetMs) throw giveUp(error, attempt);
      waited += delay;
      await sleep(delay);
    }
  }
}
