/**
 * Per-pool summaries kept incrementally: how many tasks wait in each pool and what its live nodes
 * offer. Every change is an `add` to one of the pool's {@link shardCount} counter items, in the same
 * transaction as the change it counts, so a summary is never recomputed from a scan and no single
 * partition takes a busy pool's write rate.
 *
 * @module
 */
import type { ItemKey, Write } from '../../ports/store.js';
import { shardedPk } from '../shards.js';

/** The partition-key prefix of a pool's counter shards: `POOLSUM#<pool>#<nn>` / `SUM`. */
export const poolSummaryPrefix = (pool: string): string => `POOLSUM#${pool}`;
export const poolSummarySk = 'SUM';

/** The counter shard of `pool` that `seed` (a task's job id, a node id) writes to. */
export const poolSummaryKey = (pool: string, seed: string): ItemKey => ({
  pk: shardedPk(poolSummaryPrefix(pool), seed),
  sk: poolSummarySk,
});

/** Adds `fields` to `pool`'s summary, on the shard of `seed`. */
export function poolDelta(pool: string, seed: string, fields: Readonly<Record<string, number>>): Write {
  return { kind: 'add', key: poolSummaryKey(pool, seed), fields };
}
