/** Capped exponential backoff: the first retry waits about `initialMs`, each next one twice as long, up to `maxMs`. */
export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
}

/** 250 ms doubling to 5 s: quick to notice a control plane that is back, gentle on one that is down. */
export const defaultBackoff: BackoffPolicy = { initialMs: 250, maxMs: 5_000 };

/**
 * The delay before retry number `retry` (0 for the first). Half the step is fixed and half random
 * ("equal jitter") so that many agents cut off by the same outage do not all return in lockstep.
 */
export function backoffDelayMs(policy: BackoffPolicy, retry: number, random: () => number = Math.random): number {
  const step = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(retry, 30));
  return Math.round(step / 2 + (random() * step) / 2);
}

/** Waits `ms`, or less when `signal` aborts first; never rejects, so loops just check `signal.aborted` after. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const finish = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', finish);
      resolve();
    };
    const timer = setTimeout(finish, ms);
    signal?.addEventListener('abort', finish, { once: true });
  });
}
