/**
 * Signal: wakes long-polls when work may have appeared in a pool. Best effort: a missed wake-up
 * costs latency, never correctness, because waiters re-check the store on a timer as well.
 *
 * A notification wakes ONE waiter, not every waiter of the topic: a task routed to a pool of
 * 1,000 idle nodes is claimed by one of them, and waking the other 999 only makes them read the
 * pool for nothing (the wake-up storm of issue 17). The waiter chosen is the one waiting longest
 * among those whose `accepts` takes the notification's payload (the dispatcher's: whether the
 * node could run the task). A notification that wakes nobody is counted in {@link Signal.missed},
 * which tells a waiter that timed out whether it must read the store again.
 */
export interface Signal {
  /** Wakes one waiter of `topic` that accepts `payload` (every waiter accepts `undefined`). */
  notify(topic: string, payload?: unknown): void;
  /**
   * Resolves with the notification that woke this waiter, or undefined after `timeoutMs` or on
   * abort, whichever comes first. Without `accepts` the waiter takes any notification.
   */
  wait(
    topics: readonly string[],
    timeoutMs: number,
    abort?: AbortSignal,
    accepts?: (payload: unknown) => boolean,
  ): Promise<SignalWake | undefined>;
  /**
   * How many notifications of `topic` woke no waiter so far: a waiter that saw the same count
   * before it read the store and after its timeout knows no work came that it was not told of.
   * Undefined where the signal cannot tell (notifications reach no one across processes): waiters
   * then read the store on their timer.
   */
  missed(topic: string): number | undefined;
}

/** The notification that woke a waiter. */
export interface SignalWake {
  topic: string;
  payload?: unknown;
}
