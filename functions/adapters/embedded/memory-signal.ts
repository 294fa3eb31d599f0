import type { Signal, SignalWake, WakeChooser } from '../../ports/signal.js';

/** One registered wait: what it takes, and how to end it. */
interface Waiter {
  id: number;
  accepts: ((payload: unknown) => boolean) | undefined;
  /** Whether the chooser was told of this wait (it passed a candidate). */
  described: boolean;
  wake: (by: SignalWake | undefined) => void;
}

/**
 * The {@link Signal} port within one process: `notify` wakes the waiter its {@link WakeChooser}
 * names when that waiter accepts the payload, else the longest-waiting waiter of that topic that
 * accepts it (each topic's waiters are kept in arrival order), and counts the notification as
 * missed when none does. A wait releases its timer, abort listener and registrations (the
 * chooser's too) as soon as it ends, so long polls that come and go leave nothing behind.
 */
export class MemorySignal implements Signal {
  /** For each topic, the waits currently registered on it, oldest first (a Set keeps insertion order). */
  readonly #waiters = new Map<string, Set<Waiter>>();
  readonly #byId = new Map<number, Waiter>();
  readonly #missed = new Map<string, number>();
  #chooser: WakeChooser | undefined;
  #nextId = 0;

  chooseWith(chooser: WakeChooser): void {
    this.#chooser = chooser;
  }

  notify(topic: string, payload?: unknown): void {
    const waiters = this.#waiters.get(topic);
    const takes = (waiter: Waiter) => payload === undefined || waiter.accepts === undefined || waiter.accepts(payload);
    const chosen = waiters === undefined || payload === undefined ? undefined : this.#chosen(topic, payload);
    if (chosen !== undefined && waiters?.has(chosen) && takes(chosen)) {
      chosen.wake({ topic, payload });
      return;
    }
    for (const waiter of waiters ?? []) {
      if (!takes(waiter)) continue;
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
    candidate?: unknown,
  ): Promise<SignalWake | undefined> {
    if (abort?.aborted) {
      return Promise.resolve(undefined);
    }
    return new Promise((resolve) => {
      const waiter: Waiter = {
        id: this.#nextId++,
        accepts,
        described: candidate !== undefined && this.#chooser !== undefined,
        wake: (by) => {
          clearTimeout(timer);
          abort?.removeEventListener('abort', onAbort);
          this.#byId.delete(waiter.id);
          for (const topic of topics) {
            this.#unregister(topic, waiter);
          }
          resolve(by);
        },
      };
      const onAbort = () => waiter.wake(undefined);
      const timer = setTimeout(onAbort, Math.max(0, timeoutMs));
      abort?.addEventListener('abort', onAbort, { once: true });
      this.#byId.set(waiter.id, waiter);
      for (const topic of topics) {
        let waiters = this.#waiters.get(topic);
        if (waiters === undefined) {
          waiters = new Set();
          this.#waiters.set(topic, waiters);
        }
        waiters.add(waiter);
        if (waiter.described) this.#tell((chooser) => chooser.waiting(topic, waiter.id, candidate));
      }
    });
  }

  /**
   * The waiter the chooser names, if any. A chooser that throws is a fault of the choice only:
   * the notification still wakes a waiter, in the signal's own order.
   */
  #chosen(topic: string, payload: unknown): Waiter | undefined {
    if (this.#chooser === undefined) return undefined;
    try {
      const id = this.#chooser.choose(topic, payload);
      return id === undefined ? undefined : this.#byId.get(id);
    } catch {
      return undefined;
    }
  }

  #unregister(topic: string, waiter: Waiter): void {
    const waiters = this.#waiters.get(topic);
    if (waiters?.delete(waiter) && waiters.size === 0) {
      this.#waiters.delete(topic);
    }
    if (waiter.described) this.#tell((chooser) => chooser.left(topic, waiter.id));
  }

  /** Tells the chooser of a wait that starts or ends; a chooser that throws fails its choices only, never a wait. */
  #tell(what: (chooser: WakeChooser) => void): void {
    if (this.#chooser === undefined) return;
    try {
      what(this.#chooser);
    } catch {
      // The signal's own order still wakes this waiter (see #chosen).
    }
  }
}
