import type { Signal, SignalWake } from '../ports/signal.js';

/**
 * The {@link Signal} port where nobody can be woken: each Lambda invocation runs in its own
 * sandbox, and the router that queues a task (the scheduler function) shares no memory with the
 * long poll waiting for it (an API function). `wait` therefore only sleeps for its timeout, and
 * the dispatcher finds new work by re-reading the store every `recheckMs` (`missed` cannot tell
 * it that nothing came); a notification costs nothing and reaches no one.
 */
export class PollingSignal implements Signal {
  notify(_topic: string, _payload?: unknown): void {
    // Deliberately empty: see the class documentation.
  }

  missed(_topic: string): number | undefined {
    return undefined;
  }

  wait(_topics: readonly string[], timeoutMs: number, abort?: AbortSignal): Promise<SignalWake | undefined> {
    if (abort?.aborted) {
      return Promise.resolve(undefined);
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        abort?.removeEventListener('abort', done);
        resolve(undefined);
      };
      const timer = setTimeout(done, Math.max(0, timeoutMs));
      abort?.addEventListener('abort', done, { once: true });
    });
  }
}
