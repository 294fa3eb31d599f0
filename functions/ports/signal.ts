/**
 * Signal: wakes long-polls when work may have appeared in a pool. Best effort: a missed wake-up
 * costs latency, never correctness, because waiters re-check the store on a timer as well.
 *
 * A notification wakes ONE waiter, not every waiter of the topic: a task routed to a pool of
 * 1,000 idle nodes is claimed by one of them, and waking the other 999 only makes them read the
 * pool for nothing (the wake-up storm of issue 17). Which waiter: the one a {@link WakeChooser}
 * names, where the signal was given one (the placement engine, in the embedded deployment) and
 * that waiter's `accepts` takes the payload; otherwise the one waiting longest among those whose
 * `accepts` takes the notification's payload (the dispatcher's: whether the node could run the
 * task). A notification that wakes nobody is counted in {@link Signal.missed}, which tells a
 * waiter that timed out whether it must read the store again.
 */
export interface Signal {
  /** Wakes one waiter of `topic` that accepts `payload` (every waiter accepts `undefined`). */
  notify(topic: string, payload?: unknown): void;
  /**
   * Resolves with the notification that woke this waiter, or undefined after `timeoutMs` or on
   * abort, whichever comes first. Without `accepts` the waiter takes any notification.
   * `candidate` describes the waiter to the signal's {@link WakeChooser} (the dispatcher's: the
   * node and what it holds); the signal itself never reads it.
   */
  wait(
    topics: readonly string[],
    timeoutMs: number,
    abort?: AbortSignal,
    accepts?: (payload: unknown) => boolean,
    candidate?: unknown,
  ): Promise<SignalWake | undefined>;
  /**
   * How many notifications of `topic` woke no waiter so far: a waiter that saw the same count
   * before it read the store and after its timeout knows no work came that it was not told of.
   * Undefined where the signal cannot tell (notifications reach no one across processes): waiters
   * then read the store on their timer.
   */
  missed(topic: string): number | undefined;
  /**
   * Lets `chooser` pick which accepting waiter each notification wakes. Absent where a
   * notification reaches no waiter (across Lambda sandboxes): there is nothing to choose among.
   */
  chooseWith?(chooser: WakeChooser): void;
}

/**
 * Picks the waiter a notification wakes. The signal tells it, as they happen, which waiters wait
 * on which topic (each by an id, with the `candidate` its wait passed) and asks it on every
 * notification; it answers a waiter id, or undefined to leave the choice to the signal's own
 * order. The signal still wakes the waiter only if its `accepts` takes the payload, so a chooser
 * can change which waiter is woken, never whether a waiter that refuses the payload is.
 */
export interface WakeChooser {
  /** Waiter `waiter` now waits on `topic`, described by `candidate` (only waiters that passed one). */
  waiting(topic: string, waiter: number, candidate: unknown): void;
  /** Waiter `waiter` no longer waits on `topic` (woken, timed out or aborted). */
  left(topic: string, waiter: number): void;
  /** The waiter of `topic` that `payload` should wake, or undefined to let the signal choose. */
  choose(topic: string, payload: unknown): number | undefined;
}

/** The notification that woke a waiter. */
export interface SignalWake {
  topic: string;
  payload?: unknown;
}
