import type { Clock } from '../../ports/clock.js';
import type { ItemKey, Store, Write } from '../../ports/store.js';
import { updateWithRetry } from '../records.js';
import { allShardPks, shardedPk } from '../shards.js';
import {
  type ClassSums,
  classEpochMs,
  classOfPool,
  classSample,
  mergeSums,
  type NodeEstimate,
  OnlinePerformance,
  type Outcome,
  type OutcomeKind,
  observeLatency,
  observeNode,
  type PerformanceView,
  runtimeSample,
  trustedClassRuntime,
} from './performance.js';
import type { TaskRecord } from './task-record.js';

/**
 * The learned estimates as stored, so that a restart or another Lambda starts from what was
 * learned:
 *
 *   PERF#<nodeId>                           / PERF          one node's estimate (NodeEstimate),
 *                                                           read-modify-write: one writer at a time
 *                                                           per node, at the node's outcome rate
 *   PERFCLASS#<workload>@<class>#<nn>       / E<epoch>      a workload's run time sums on a class
 *                                                           (ClassSums fields), `add` writes only,
 *                                                           on one of {@link classShards} shards
 *
 * An outcome costs one GetItem (the node's item) and one transaction of at most two writes (the
 * node's put and, for a completion, one class `add`). Class items are counters that many nodes
 * add to at once, so they are sharded by the task id and never read before a write; each epoch
 * (classEpochMs) starts new items, and readers combine the two latest of each shard.
 */
export const classShards = 8;
/** A node's estimate outlives its silence by this long (its item's TTL): past it the node starts afresh. */
export const nodeEstimateTtlMs = 30 * 24 * 3600_000;

export const perfNodeKey = (nodeId: string): ItemKey => ({ pk: `PERF#${nodeId}`, sk: 'PERF' });
const perfClassPrefix = (workload: string, acceleratorClass: string): string =>
  `PERFCLASS#${workload}@${acceleratorClass}`;
const epochSk = (epoch: number): string => `E${String(epoch).padStart(8, '0')}`;

export interface StoredNodeEstimate extends NodeEstimate {
  nodeId: string;
}

/** The `add` one run time sample makes to its class's shard of the current epoch. */
export function classSampleWrite(
  workload: string,
  acceleratorClass: string,
  seed: string,
  runtimeMs: number,
  at: number,
): Write {
  const { epoch, fields } = classSample(runtimeMs, at);
  return {
    kind: 'add',
    key: { pk: shardedPk(perfClassPrefix(workload, acceleratorClass), seed, classShards), sk: epochSk(epoch) },
    fields,
  };
}

/**
 * The outcome an ended attempt gives, or undefined where there is nothing to learn (a cancelled
 * attempt, a result still waiting for verification, an attempt not in the history).
 *
 * Call sites: the verifier (completed, rejected), the node's failure and release reports
 * (task-reports), and the reaper's lost leases.
 */
export function attemptOutcome(task: TaskRecord, attemptNumber: number, workload?: string): Outcome | undefined {
  const attempt = task.attempts.find((a) => a.number === attemptNumber);
  if (attempt?.outcome === undefined || attempt.endedAt === undefined) return undefined;
  const kind = outcomeKinds[attempt.outcome];
  if (kind === undefined || (kind === 'completed' && task.state !== 'verified')) return undefined;
  const at = Date.parse(attempt.endedAt);
  const sample =
    kind === 'completed' && workload !== undefined && task.pool !== undefined
      ? { workload, acceleratorClass: classOfPool(task.pool), runtimeMs: at - Date.parse(attempt.assignedAt) }
      : {};
  return { nodeId: attempt.nodeId, kind, at, ...sample };
}

const outcomeKinds: Record<string, OutcomeKind | undefined> = {
  completed: 'completed',
  failed: 'failed',
  'lease-expired': 'lost',
  rejected: 'rejected',
  released: 'released',
  cancelled: undefined,
};

/**
 * The estimates of this process, kept in step with the store: outcomes are written through
 * (and applied here at once), and what placement or routing is about to ask is loaded first
 * with {@link StoredPerformance.prepare}, since a {@link PerformanceView} answers synchronously.
 * What was loaded is reloaded after `ttlMs`, to take in what other processes learned.
 */
export class StoredPerformance implements PerformanceView {
  private readonly memory: OnlinePerformance;
  private readonly nodesLoadedAt = new Map<string, number>();
  private readonly classesLoadedAt = new Map<string, number>();

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly ttlMs = 10_000,
  ) {
    this.memory = new OnlinePerformance(() => clock.now());
  }

  /** Loads the estimates of these nodes and workload classes that are not fresh here. */
  async prepare(wanted: {
    nodeIds?: readonly string[];
    classes?: readonly { workload: string; acceleratorClass: string }[];
  }): Promise<void> {
    const now = this.clock.now();
    const stale = (loadedAt: number | undefined) => loadedAt === undefined || now - loadedAt >= this.ttlMs;
    await Promise.all([
      ...(wanted.nodeIds ?? [])
        .filter((id) => stale(this.nodesLoadedAt.get(id)))
        .map(async (id) => {
          const item = await this.store.get<StoredNodeEstimate>(perfNodeKey(id));
          this.memory.setNode(id, item?.data);
          this.nodesLoadedAt.set(id, now);
        }),
      ...(wanted.classes ?? [])
        .filter((c) => stale(this.classesLoadedAt.get(perfClassPrefix(c.workload, c.acceleratorClass))))
        .map(async ({ workload, acceleratorClass }) => {
          this.memory.setClass(workload, acceleratorClass, await this.readClass(workload, acceleratorClass));
          this.classesLoadedAt.set(perfClassPrefix(workload, acceleratorClass), now);
        }),
    ]);
  }

  /**
   * Learns from one ended attempt: the node's estimate (read, updated, written back under its
   * version) and, for a completion, its class's run time sums, in one transaction.
   */
  async recordOutcome(outcome: Outcome): Promise<void> {
    const sample = runtimeSample(outcome);
    let predicted: number | undefined;
    const classWrites: Write[] = [];
    if (sample !== undefined) {
      await this.prepare({ classes: [{ workload: sample.workload, acceleratorClass: sample.cls }] });
      predicted = trustedClassRuntime(this.memory.classSums(sample.workload, sample.cls), outcome.at);
      const seed = `${outcome.nodeId}#${outcome.at}`;
      classWrites.push(classSampleWrite(sample.workload, sample.cls, seed, sample.runtimeMs, outcome.at));
    }
    const next = await this.updateNode(
      outcome.nodeId,
      (before) => observeNode(before, outcome, predicted),
      classWrites,
    );
    this.memory.setNode(outcome.nodeId, next);
    if (sample !== undefined) {
      const { epoch, fields } = classSample(sample.runtimeMs, outcome.at);
      this.memory.mergeClass(sample.workload, sample.cls, { landmark: epoch * classEpochMs, ...fields });
    }
  }

  /** Learns a measured round trip to the node (a poll or claim answered, as the caller timed it). */
  async recordLatency(nodeId: string, ms: number): Promise<void> {
    const now = this.clock.now();
    this.memory.setNode(nodeId, await this.updateNode(nodeId, (before) => observeLatency(before, ms, now)));
  }

  runtimeMs(workload: string, acceleratorClass: string): number {
    return this.memory.runtimeMs(workload, acceleratorClass);
  }

  slowdown(nodeId: string): number {
    return this.memory.slowdown(nodeId);
  }

  reliability(nodeId: string): number {
    return this.memory.reliability(nodeId);
  }

  latencyMs(nodeId: string): number {
    return this.memory.latencyMs(nodeId);
  }

  /** Rewrites the node's estimate under the version read, with `alongside` in the same transaction. */
  private async updateNode(
    nodeId: string,
    change: (before: NodeEstimate | undefined) => NodeEstimate,
    alongside: readonly Write[] = [],
  ): Promise<NodeEstimate> {
    const updated = await updateWithRetry<StoredNodeEstimate, NodeEstimate>(
      this.store,
      perfNodeKey(nodeId),
      (current) => {
        const next = change(current?.data);
        const stored: StoredNodeEstimate = { ...next, nodeId };
        const put: Write = {
          kind: 'put',
          key: perfNodeKey(nodeId),
          data: stored,
          expiresAt: Math.ceil((next.updatedAt + nodeEstimateTtlMs) / 1000),
          expectVersion: current?.version ?? 0,
        };
        return { writes: [put, ...alongside], result: next };
      },
    );
    return updated as NodeEstimate;
  }

  /** A class's sums: the two latest epochs of every shard, merged. */
  private async readClass(workload: string, acceleratorClass: string): Promise<ClassSums | undefined> {
    const pages = await Promise.all(
      allShardPks(perfClassPrefix(workload, acceleratorClass), classShards).map((pk) =>
        this.store.query<{ w: number; sx: number; sxx: number }>({ pk, skPrefix: 'E', descending: true, limit: 2 }),
      ),
    );
    let merged: ClassSums | undefined;
    for (const item of pages.flatMap((p) => p.items)) {
      const landmark = Number(item.sk.slice(1)) * classEpochMs;
      const sums: ClassSums = { landmark, w: item.data.w, sx: item.data.sx, sxx: item.data.sxx };
      merged = merged === undefined ? sums : mergeSums(merged, sums);
    }
    return merged;
  }
}
