import type { Clock } from '../../ports/clock.js';
import type { ItemKey, Store, Write } from '../../ports/store.js';
import { ContentionError } from '../errors.js';
import { updateWithRetry } from '../records.js';
import { allShardPks, shardedPk } from '../shards.js';
import {
  type ClassSums,
  classEpochMs,
  classOfPool,
  classSample,
  latencySampleDue,
  mergeSums,
  type NodeEstimate,
  OnlinePerformance,
  type Outcome,
  type OutcomeKind,
  observeLatency,
  observeNode,
  type PerformanceView,
  runtimeSample,
  workloadLevels,
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
 * (classEpochMs) starts new items, and readers combine the two latest of each shard. A class item
 * expires {@link classSumsTtlMs} after its epoch ends, so a workload class that keeps running
 * holds a bounded number of items, and one unseen that long starts afresh, as a node does.
 */
export const classShards = 8;
/** A node's estimate outlives its silence by this long (its item's TTL): past it the node starts afresh. */
export const nodeEstimateTtlMs = 30 * 24 * 3600_000;
/**
 * A class item outlives its epoch by this long (its TTL). Readers use the two latest items of each
 * shard, so while the class runs only two epochs matter; the rest is what a class quiet for weeks
 * still knows, kept as long as a node's estimate is.
 */
export const classSumsTtlMs = nodeEstimateTtlMs;

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
    // The same for every add to the item (its epoch's end plus the TTL), so no add needs a read.
    expiresAt: Math.ceil(((epoch + 1) * classEpochMs + classSumsTtlMs) / 1000),
  };
}

/**
 * The outcome an ended attempt gives, or undefined where there is nothing to learn (a cancelled
 * attempt, a result still waiting for verification, a non-zero exit code, an attempt not in the
 * history).
 *
 * Call sites: the verifier (completed, rejected), the node's failure and release reports
 * (task-reports), and the reaper's lost leases.
 */
export function attemptOutcome(task: TaskRecord, attemptNumber: number, workload?: string): Outcome | undefined {
  const attempt = task.attempts.find((a) => a.number === attemptNumber);
  if (attempt?.outcome === undefined || attempt.endedAt === undefined) return undefined;
  const kind = outcomeKinds[attempt.outcome];
  if (kind === undefined || (kind === 'completed' && task.state !== 'verified')) return undefined;
  // A run that ended with an exit code other than 0 ran to its end: it tells of the job, not of
  // the node (a broken job would otherwise mark every node it touched as unreliable).
  if (kind === 'failed' && attempt.report?.kind === 'result') return undefined;
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
 * The estimates of this process, kept in step with the store: outcomes are written through (and
 * applied here at once), and a question about a node or class not loaded here, or loaded more than
 * `ttlMs` ago, starts a load in the background and is answered from what is known meanwhile (the
 * priors at first), since a {@link PerformanceView} answers synchronously. A caller that must have
 * the stored figures for its next questions awaits {@link StoredPerformance.prepare} first.
 *
 * The cost is a GetItem per node and a query per class shard, each at most once per `ttlMs` and
 * only for what is asked: placement that scores a whole fleet index should refresh its index
 * from the view no faster than that.
 */
export class StoredPerformance implements PerformanceView {
  private readonly memory: OnlinePerformance;
  /** When each node and class was last (being) loaded: the key is the node id or the class prefix. */
  private readonly loadedAt = new Map<string, number>();

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
    const classes = (wanted.classes ?? []).flatMap(({ workload, acceleratorClass }) =>
      workloadLevels(workload).map((level) => ({ workload: level, acceleratorClass })),
    );
    await Promise.all([
      ...(wanted.nodeIds ?? []).map((id) => this.loadNode(id)),
      ...classes.map(({ workload, acceleratorClass }) => this.loadClass(workload, acceleratorClass)),
    ]);
  }

  /**
   * Learns from one ended attempt: the node's estimate (read, updated, written back under its
   * version) and, for a completion, its workload's run time sums on the class (the label's and
   * its type's), in one transaction.
   *
   * Callers record after the transition they learn from has landed, so this must not fail them:
   * when many attempts of one node end at once and its item stays contended past the retries
   * (ContentionError), the outcome is dropped (one sample fewer) and false is answered.
   */
  async recordOutcome(outcome: Outcome): Promise<boolean> {
    try {
      await this.learn(outcome);
      return true;
    } catch (error) {
      if (error instanceof ContentionError) return false;
      throw error;
    }
  }

  private async learn(outcome: Outcome): Promise<void> {
    const sample = runtimeSample(outcome);
    let predicted: number | undefined;
    const classWrites: Write[] = [];
    if (sample !== undefined) {
      await this.prepare({ classes: [{ workload: sample.workload, acceleratorClass: sample.cls }] });
      predicted = this.memory.trustedRuntime(sample.workload, sample.cls, outcome.at);
      const seed = `${outcome.nodeId}#${outcome.at}`;
      for (const level of workloadLevels(sample.workload)) {
        classWrites.push(classSampleWrite(level, sample.cls, seed, sample.runtimeMs, outcome.at));
      }
    }
    const next = await this.updateNode(
      outcome.nodeId,
      (before) => observeNode(before, outcome, predicted),
      classWrites,
    );
    this.memory.setNode(outcome.nodeId, next);
    if (sample !== undefined) {
      const { epoch, fields } = classSample(sample.runtimeMs, outcome.at);
      for (const level of workloadLevels(sample.workload)) {
        this.memory.mergeClass(level, sample.cls, { landmark: epoch * classEpochMs, ...fields });
      }
    }
  }

  /**
   * Learns from attempt `attemptNumber` of `task` once it ended, if there is anything to learn
   * ({@link attemptOutcome}): the one call the places that end attempts make.
   */
  async recordAttempt(task: TaskRecord, attemptNumber: number, workload?: string): Promise<boolean> {
    const outcome = attemptOutcome(task, attemptNumber, workload);
    return outcome === undefined ? false : this.recordOutcome(outcome);
  }

  /**
   * Learns a round trip the node measured and reported in its signed heartbeat (its own view:
   * the whole request, the control plane's time included). At most one sample per node per
   * `latencyLimits.sampleEveryMs` (performance.ts) is learned, whatever the node sends: where this process
   * learned (or read) a sample within the period, the report is dropped without a read; else the
   * stored estimate is read and, when its last sample is that recent, nothing is written. Answers
   * whether the sample was learned.
   */
  async recordLatency(nodeId: string, ms: number): Promise<boolean> {
    const now = this.clock.now();
    if (!latencySampleDue(this.memory.node(nodeId), now)) return false;
    const seen: { read?: NodeEstimate | undefined } = {};
    const next = await this.updateNode(nodeId, (before) => {
      seen.read = before;
      return latencySampleDue(before, now) ? observeLatency(before, ms, now) : undefined;
    });
    if (next !== undefined) {
      this.memory.setNode(nodeId, next);
      return true;
    }
    // Another process learned one this period: keep what was read, so the next report costs nothing.
    const { read } = seen;
    const known = this.memory.node(nodeId);
    if (read !== undefined && (known === undefined || read.updatedAt >= known.updatedAt))
      this.memory.setNode(nodeId, read);
    return false;
  }

  runtimeMs(workload: string, acceleratorClass: string): number {
    for (const level of workloadLevels(workload)) this.refresh(() => this.loadClass(level, acceleratorClass));
    return this.memory.runtimeMs(workload, acceleratorClass);
  }

  slowdown(nodeId: string): number {
    this.refresh(() => this.loadNode(nodeId));
    return this.memory.slowdown(nodeId);
  }

  reliability(nodeId: string): number {
    this.refresh(() => this.loadNode(nodeId));
    return this.memory.reliability(nodeId);
  }

  latencyMs(nodeId: string): number {
    this.refresh(() => this.loadNode(nodeId));
    return this.memory.latencyMs(nodeId);
  }

  /**
   * Starts a load in the background. Estimates are advice: a failed load leaves what is known
   * and is tried again once `ttlMs` has passed, so its error is dropped here.
   */
  private refresh(load: () => Promise<void>): void {
    load().catch(() => undefined);
  }

  private isFresh(key: string): boolean {
    const at = this.loadedAt.get(key);
    return at !== undefined && this.clock.now() - at < this.ttlMs;
  }

  private async loadNode(nodeId: string): Promise<void> {
    // No node named (a router's pool-wide latency question): the prior, nothing to read.
    if (nodeId === '' || this.isFresh(nodeId)) return;
    this.loadedAt.set(nodeId, this.clock.now());
    const item = await this.store.get<StoredNodeEstimate>(perfNodeKey(nodeId));
    // An outcome recorded here while the read was on its way is newer than what it read.
    const known = this.memory.node(nodeId);
    if (known === undefined || (item !== undefined && item.data.updatedAt >= known.updatedAt)) {
      this.memory.setNode(nodeId, item?.data);
    }
  }

  private async loadClass(workload: string, acceleratorClass: string): Promise<void> {
    const key = perfClassPrefix(workload, acceleratorClass);
    if (this.isFresh(key)) return;
    this.loadedAt.set(key, this.clock.now());
    this.memory.setClass(workload, acceleratorClass, await this.readClass(workload, acceleratorClass));
  }

  /**
   * Rewrites the node's estimate under the version read, with `alongside` in the same transaction;
   * `change` answering undefined writes nothing (and undefined is answered).
   */
  private async updateNode(
    nodeId: string,
    change: (before: NodeEstimate | undefined) => NodeEstimate | undefined,
    alongside: readonly Write[] = [],
  ): Promise<NodeEstimate | undefined> {
    return updateWithRetry<StoredNodeEstimate, NodeEstimate>(this.store, perfNodeKey(nodeId), (current) => {
      const next = change(current?.data);
      if (next === undefined) return undefined;
      const stored: StoredNodeEstimate = { ...next, nodeId };
      const put: Write = {
        kind: 'put',
        key: perfNodeKey(nodeId),
        data: stored,
        expiresAt: Math.ceil((next.updatedAt + nodeEstimateTtlMs) / 1000),
        expectVersion: current?.version ?? 0,
      };
      return { writes: [put, ...alongside], result: next };
    });
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
