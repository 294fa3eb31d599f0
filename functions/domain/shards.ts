/**
 * Sharded keys: a key that the whole fleet would write (the node list, the due-lease list, a pool's
 * counters) is split over {@link shardCount} partitions, chosen by a stable hash of the item's id,
 * so no single DynamoDB partition takes the fleet's write rate. Readers visit every shard.
 */
export const shardCount = 16;

/** FNV-1a over the id's UTF-16 code units: stable across processes, cheap, well spread. */
export function shardOf(id: string, count: number = shardCount): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) {
    hash ^= id.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % count;
}

/** `<prefix>#<shard, 2 digits>`: the partition key of `id`'s shard. */
export function shardedPk(prefix: string, id: string, count: number = shardCount): string {
  return `${prefix}#${String(shardOf(id, count)).padStart(2, '0')}`;
}

/** Every shard's partition key under `prefix`, in shard order. */
export function allShardPks(prefix: string, count: number = shardCount): string[] {
  return Array.from({ length: count }, (_, shard) => `${prefix}#${String(shard).padStart(2, '0')}`);
}
