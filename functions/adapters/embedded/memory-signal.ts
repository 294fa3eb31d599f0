import type { Signal, SignalWake } from '../../ports/signal.js';

/** One registered wait: what it takes, and how to end it. */
interface Waiter {
  accepts: ((payload: unknown) => boolean) | undefined;
  wake: (by: SignalWake | undefined) => void;
}

/**
 * The {@link Signal} port within one process: `notify` wakes the longest-waiting waiter of that
 * topic that accepts the payload (each topic's waiters are kept in arrival order), and counts the
 * notification as missed when none does. A wait releases its timer, abort listener and
 * registrations as soon as it ends, so long polls that come and go leave nothing behind.
 */
export class MemorySignal implements Signal {
  /** For each topic, the waits currently registered on it, oldest first (a Set keeps insertion order). */
  readonly #waiters = new Map<string, Set<Waiter>>();
  readonly #missed = new Map<string, number>();

  notify(topic: string, payload?: unknown): void {
    for (const waiter of this.#waiters.get(topic) ?? []) {
      if (payload !== undefined && waiter.accepts !== undefined && !waiter.accepts(payload)) continue;
      waiter.wake({ topic, ...(payload === undefined ? {} : { payload }) });
      return;
    }
    this.#missed.set(topic, (this.#missed.get(topic) ?? 0) + 1);
  }

  missed(topic: string): number {
    return this.#missed.get(topic) ?? 0;
  }

  wait(
    topics: readonly string[],
    timeoutMs: number,
    abort?: AbortSignal,
    accepts?: (payload: unknown) => boolean,
  ): Promise<SignalWake | undefined> {
    if (abort?.aborted) {
      return Promise.resolve(undefined);
    }
    return new Promise((resolve) => {
      const waiter: Waiter = {
        accepts,
        wake: (by) => {
          clearTimeout(timer);
          abort?.removeEventListener('abort', onAbort);
          for (const topic of topics) {
            this.#unregister(topic, waiter);
          }
          resolve(by);
        },
      };
      const onAbort = () => waiter.wake(undefined);
      const timer = setTimeout(onAbort, Math.max(0, timeoutMs));
      abort?.addEventListener('abort', onAbort, { once: true });
      for (const topic of topics) {
        let waiters = this.#waiters.get(topic);
        if (waiters === undefined) {
          waiters = new Set();
          this.#waiters.set(topic, waiters);
        }
        waiters.add(waiter);
      }
    });
  }

  #unregister(topic: string, waiter: Waiter): void {
    const waiters = this.#waiters.get(topic);
    if (waiters?.delete(waiter) && waiters.size === 0) {
      this.#waiters.delete(topic);
    }
  }
}
