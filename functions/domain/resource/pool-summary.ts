/**
 * Per-pool summaries kept incrementally: how many tasks wait in each pool and what its live nodes
 * offer. Every change is an `add` to one of the pool's {@link shardCount} counter items, in the same
 * transaction as the change it counts (a task entering or leaving the pool's queue, a node turning
 * live or dead), so a summary is never recomputed from a scan and no single partition takes a busy
 * pool's write rate. Reading one pool is {@link shardCount} GetItems, whatever the fleet's size.
 *
 *   POOLSUM#<pool>#<nn> / SUM    counters: queued, liveNodes, liveGpus and the capability histogram
 *   POOL#<pool> / META           the pool exists; listed in byOwner `POOLS` so {@link PoolSummaries.all} finds it
 *
 * The histogram counts live nodes by what they could run at most (not what they have free): it
 * answers "could some live node of this pool ever run the task", which routing needs, cheaply and
 * optimistically (a bucket below a demand stands for it). Dispatch's fit check stays exact.
 *
 * @module
 */
import type { Clock } from '../../ports/clock.js';
import { ConditionFailedError, type ItemKey, type Store, type Write } from '../../ports/store.js';
import { allShardPks, shardCount, shardedPk, shardOf } from '../shards.js';
import { demandOf, type TaskRequirements } from './fit.js';
import type { NodeRecord } from './node-record.js';
import { acceleratorClass, acceleratorTable, cpuClass, otherClassOf, poolId, regionOfPool } from './pools.js';

/** Lower bounds of the histogram buckets: a node counts in every bucket it reaches. */
export const summaryBuckets = {
  /**
   * Devices on the node, of any class: a task's devices may span classes on one node (fitOnNode
   * picks any that match) and the router queues it in its first device's pool.
   */
  gpus: [1, 2, 4, 8, 16],
  /** The node's largest device of the pool's class, GiB of memory. */
  vramGiB: [16, 24, 40, 80],
  cores: [4, 16, 64],
  memoryGiB: [16, 64, 256],
} as const;

/**
 * A pool's summary: counters summed over its shards. Histogram fields are named
 * `<bucket kind>>=<lower bound>` (`gpus>=4`, `vramGiB>=80`) plus `container` and `process` (live
 * nodes with that kind of runtime); a field no write ever touched reads 0.
 */
export interface PoolSummary {
  pool: string;
  /** Tasks queued in the pool (routed, waiting for a claim). */
  queued: number;
  liveNodes: number;
  /** Devices of the pool's class on its live nodes. */
  liveGpus: number;
  /** Every counter by name, the three above included. */
  fields: Readonly<Record<string, number>>;
}

export const poolSummarySk = 'SUM';
/** The partition-key prefix of a pool's counter shards. */
export const poolSummaryPrefix = (pool: string): string => `POOLSUM#${pool}`;
/** The counter shard of `pool` that `seed` (a node id) writes to; tasks use {@link taskPoolDelta}. */
export const poolSummaryKey = (pool: string, seed: string): ItemKey => ({
  pk: shardedPk(poolSummaryPrefix(pool), seed),
  sk: poolSummarySk,
});
export const poolMetaKey = (pool: string): ItemKey => ({ pk: `POOL#${pool}`, sk: 'META' });
/** The byOwner partition listing every pool that ever had a node or a task. */
export const poolListPk = 'POOLS';

/** Adds `fields` to `pool`'s summary, on the shard of `seed`. */
export function poolDelta(pool: string, seed: string, fields: Readonly<Record<string, number>>): Write {
  return { kind: 'add', key: poolSummaryKey(pool, seed), fields };
}

/**
 * Adds `fields` to `pool`'s summary on the shard of task `index` of job `jobId`: the job's tasks
 * take the shards round-robin from one its id picks, so the tasks of one job (claimed by many
 * nodes at once) spread evenly, ceil(tasks / {@link shardCount}) on each, whatever the job.
 */
export function taskPoolDelta(
  pool: string,
  task: { readonly jobId: string; readonly index: number },
  fields: Readonly<Record<string, number>>,
): Write {
  const shard = (shardOf(task.jobId) + task.index) % shardCount;
  return {
    kind: 'add',
    key: { pk: `${poolSummaryPrefix(pool)}#${String(shard).padStart(2, '0')}`, sk: poolSummarySk },
    fields,
  };
}

/** `fields` negated: what a node that stops being live takes back from its pool. */
export function negated(fields: Readonly<Record<string, number>>): Record<string, number> {
  return Object.fromEntries(Object.entries(fields).map(([name, value]) => [name, -value]));
}

const bucketField = (kind: keyof typeof summaryBuckets, bound: number): string => `${kind}>=${bound}`;

/**
 * What one live node adds to `pool`'s summary: liveNodes 1, its devices of the pool's class, and
 * a 1 in every histogram bucket it reaches (buckets it misses are left out, so the add stays small).
 */
export function nodeCapacityFields(node: Pick<NodeRecord, 'inventory'>, pool: string): Record<string, number> {
  const { inventory } = node;
  const devices = inventory.gpus.filter((gpu) => poolId(inventory.region, acceleratorClass(gpu)) === pool);
  const fields: Record<string, number> = { liveNodes: 1 };
  if (devices.length > 0) fields.liveGpus = devices.length;
  const vramGiB = Math.max(0, ...devices.map((gpu) => gpu.vramMiB / 1024));
  const reached: [keyof typeof summaryBuckets, number][] = [
    ['gpus', inventory.gpus.length],
    ['vramGiB', vramGiB],
    ['cores', inventory.cpu.cores],
    ['memoryGiB', inventory.memoryMiB / 1024],
  ];
  for (const [kind, value] of reached) {
    for (const bound of summaryBuckets[kind]) if (value >= bound) fields[bucketField(kind, bound)] = 1;
  }
  if (inventory.runtimes.includes('process')) fields.process = 1;
  if (inventory.runtimes.some((runtime) => runtime !== 'process')) fields.container = 1;
  return fields;
}

/**
 * Whether some live node of the summary's pool may fit the task: its region, class, runtime and
 * the histogram bucket at or below each demand. Optimistic where the buckets are coarse (a node
 * counted in `gpus>=4` may have 4 where 6 are asked); never pessimistic, so routing never rules
 * out a pool that could run the task.
 */
export function fitsSummary(req: TaskRequirements, summary: PoolSummary): boolean {
  if (summary.liveNodes <= 0) return false;
  const { pool, fields } = summary;
  if (req.regions !== undefined && !req.regions.includes(regionOfPool(pool))) return false;
  if ((fields[req.needsContainer ? 'container' : 'process'] ?? 0) <= 0) return false;
  const demand = demandOf(req);
  if (reaching(summary, 'cores', demand.cpuCores) <= 0) return false;
  if (reaching(summary, 'memoryGiB', demand.memoryMiB / 1024) <= 0) return false;
  const gpus = req.gpus;
  if (gpus.count === 0) return true;
  const cls = pool.slice(pool.indexOf('/') + 1);
  if (cls === cpuClass || !classMayMatch(gpus, cls)) return false;
  if (reaching(summary, 'gpus', gpus.count) <= 0) return false;
  return reaching(summary, 'vramGiB', (gpus.minVramMiB ?? 0) / 1024) > 0;
}

/**
 * How many live nodes of the summary's pool may fit the task: the fewest among the histogram
 * buckets its demands reach (0 when {@link fitsSummary} says none). An upper bound, optimistic
 * like the histogram; a gang needing more nodes than this cannot be bound now.
 */
export function liveNodesFitting(req: TaskRequirements, summary: PoolSummary): number {
  if (!fitsSummary(req, summary)) return 0;
  const demand = demandOf(req);
  const counts = [
    summary.fields[req.needsContainer ? 'container' : 'process'] ?? 0,
    reaching(summary, 'cores', demand.cpuCores),
    reaching(summary, 'memoryGiB', demand.memoryMiB / 1024),
  ];
  if (req.gpus.count > 0) {
    counts.push(
      reaching(summary, 'gpus', req.gpus.count),
      reaching(summary, 'vramGiB', (req.gpus.minVramMiB ?? 0) / 1024),
    );
  }
  return Math.min(summary.liveNodes, ...counts);
}

/** Live nodes in the highest bucket of `kind` at or below `demand`; every live node when the demand is below all. */
function reaching(summary: PoolSummary, kind: keyof typeof summaryBuckets, demand: number): number {
  let count = summary.liveNodes;
  for (const bound of summaryBuckets[kind]) {
    if (bound > demand) break;
    count = summary.fields[bucketField(kind, bound)] ?? 0;
  }
  return count;
}

/** Whether devices of class `cls` may satisfy the vendor and model parts of a GPU requirement. */
function classMayMatch(req: TaskRequirements['gpus'], cls: string): boolean {
  const entry = acceleratorTable.find((e) => e.class === cls);
  const vendor = entry?.vendor ?? Object.entries(otherClassOf).find(([, c]) => c === cls)?.[0];
  if (req.vendor !== undefined && vendor !== undefined && req.vendor !== vendor) return false;
  if (req.models === undefined || req.models.length === 0 || entry === undefined) return true;
  return req.models.some((model) => {
    const name = model.trim().toLowerCase();
    return name === cls || entry.pattern.test(` ${name.replace(/[^a-z0-9]+/g, ' ')} `);
  });
}

/** Sums counter shards into a summary. */
export function summaryOf(pool: string, shards: readonly (Readonly<Record<string, number>> | undefined)[]) {
  const fields: Record<string, number> = {};
  for (const shard of shards) {
    for (const [name, value] of Object.entries(shard ?? {})) {
      if (typeof value === 'number') fields[name] = (fields[name] ?? 0) + value;
    }
  }
  const summary: PoolSummary = {
    pool,
    queued: fields.queued ?? 0,
    liveNodes: fields.liveNodes ?? 0,
    liveGpus: fields.liveGpus ?? 0,
    fields,
  };
  return summary;
}

/**
 * Reads pool summaries, cached for `ttlMs` so that routing a burst of tasks costs one read per
 * pool and period. A summary may thus lag its counters by `ttlMs`; routing tolerates that, since
 * dispatch checks every fit exactly.
 */
export class PoolSummaries {
  readonly #cache = new Map<string, { at: number; summary: PoolSummary }>();
  #pools: { at: number; pools: string[] } | undefined;
  /** Pools known to have their META item, so {@link ensurePool} writes once per pool and process. */
  readonly #ensured = new Set<string>();

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly ttlMs = 1000,
  ) {}

  /** The summary of `pool`: its shards read in parallel, a fresh read at most once per `ttlMs`. */
  async get(pool: string): Promise<PoolSummary> {
    const now = this.clock.now();
    const cached = this.#cache.get(pool);
    if (cached !== undefined && now - cached.at <= this.ttlMs) return cached.summary;
    const shards = await Promise.all(
      allShardPks(poolSummaryPrefix(pool)).map((pk) =>
        this.store.get<Record<string, number>>({ pk, sk: poolSummarySk }),
      ),
    );
    const summary = summaryOf(
      pool,
      shards.map((item) => item?.data),
    );
    this.#cache.set(pool, { at: now, summary });
    return summary;
  }

  /** The summaries of every known pool (see {@link ensurePool}). */
  async all(): Promise<PoolSummary[]> {
    return Promise.all((await this.pools()).map((pool) => this.get(pool)));
  }

  /** Every known pool, by name; cached like the summaries. */
  async pools(): Promise<string[]> {
    const now = this.clock.now();
    if (this.#pools !== undefined && now - this.#pools.at <= this.ttlMs) return this.#pools.pools;
    const pools: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.store.query({
        index: 'byOwner',
        pk: poolListPk,
        limit: 1000,
        ...(cursor === undefined ? {} : { cursor }),
      });
      for (const item of page.items) {
        const pool = item.indexes.byOwner?.sk;
        if (pool !== undefined) pools.push(pool);
      }
      cursor = page.cursor;
    } while (cursor !== undefined);
    this.#pools = { at: now, pools };
    return pools;
  }

  /**
   * Makes `pool` known to {@link all}: a put-if-absent of its META item, skipped once this
   * process has seen it done. Call it before the first counter write to a pool (node registration).
   */
  async ensurePool(pool: string): Promise<void> {
    if (this.#ensured.has(pool)) return;
    try {
      await this.store.transact([ensurePoolWrite(pool)]);
      this.#pools = undefined;
    } catch (error) {
      if (!(error instanceof ConditionFailedError)) throw error;
    }
    this.#ensured.add(pool);
  }

  /** Forgets every cached read, e.g. after this process changed a pool's liveness. */
  invalidate(): void {
    this.#cache.clear();
    this.#pools = undefined;
  }
}

/** The put-if-absent of a pool's META item, listed in byOwner `POOLS`. */
function ensurePoolWrite(pool: string): Write {
  return {
    kind: 'put',
    key: poolMetaKey(pool),
    data: { pool },
    indexes: { byOwner: { pk: poolListPk, sk: pool } },
    expectVersion: 0,
  };
}
