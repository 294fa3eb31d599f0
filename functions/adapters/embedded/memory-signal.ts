import type { Signal } from '../../ports/signal.js';

/**
 * The {@link Signal} port within one process: `notify` wakes the waiters registered on that topic
 * at that moment. A wait releases its timer, abort listener and registrations as soon as it ends,
 * so long polls that come and go leave nothing behind.
 */
export class MemorySignal implements Signal {
  /** For each topic, the wake-up functions of the waits currently registered on it. */
  readonly #waiters = new Map<string, Set<() => void>>();

  notify(topic: string): void {
    for (const wake of [...(this.#waiters.get(topic) ?? [])]) {
      wake();
    }
  }

  wait(topics: readonly string[], timeoutMs: number, abort?: AbortSignal): Promise<void> {
    if (abort?.aborted) {
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        abort?.removeEventListener('abort', wake);
        for (const topic of topics) {
          this.#unregister(topic, wake);
        }
        resolve();
      };
      const timer = setTimeout(wake, Math.max(0, timeoutMs));
      abort?.addEventListener('abort', wake, { once: true });
      for (const topic of topics) {
        let waiters = this.#waiters.get(topic);
        if (waiters === undefined) {
          waiters = new Set();
          this.#waiters.set(topic, waiters);
        }
        waiters.add(wake);
      }
    });
  }

  #unregister(topic: string, wake: () => void): void {
    const waiters = this.#waiters.get(topic);
    if (waiters?.delete(wake) && waiters.size === 0) {
      this.#waiters.delete(topic);
    }
  }
}
