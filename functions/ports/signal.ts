/**
 * Signal: wakes long-polls when work may have appeared in a pool. Best effort: a missed wake-up
 * costs latency, never correctness, because waiters re-check the store on a timer as well.
 */
export interface Signal {
  notify(topic: string): void;
  /** Resolves when `topic` is notified or after `timeoutMs`, whichever comes first, or on abort. */
  wait(topics: readonly string[], timeoutMs: number, abort?: AbortSignal): Promise<void>;
}
