import type { Clock } from '../../ports/clock.js';
import type { Signal } from '../../ports/signal.js';
import { ConditionFailedError, type Store, type StoredItem } from '../../ports/store.js';
import type { WorkHints } from '../../ports/work-hints.js';
import { isoTime } from '../records.js';
import { fitOnNode, type TaskRequirements } from '../resource/fit.js';
import type { NodeRecord } from '../resource/node-record.js';
import type { NodeRegistry } from '../resource/node-registry.js';
import { fitsSummary, liveNodesFitting, type PoolSummary } from '../resource/pool-summary.js';
import { acceleratorClass, acceleratorTable, cpuClass, poolId, regionOfPool } from '../resource/pools.js';
import { neutralPerformance, type PerformanceView } from './performance.js';
import { poolPk, putTask, type TaskRecord, unroutedPool } from './task-record.js';
import { workSignal } from './work-signal.js';

/** How long a snapshot of live nodes is reused while routing a burst of tasks (the fallback path). */
const capacityTtlMs = 1000;
/**
 * A sweep of the unrouted tasks that found nothing to route is repeated, with fleet capacity
 * unchanged, only after this long: a task whose schedule message was lost waits at most this.
 */
const resweepMs = 30_000;
/** Tasks a sweep remembers as tried under the current capacity (beyond, it forgets and tries again). */
const maxTriedRemembered = 100_000;
/** The workload class routing predicts run times for when a task does not carry its own (older records). */
const defaultWorkload = 'batch';
/** A task that needs no GPU pays this much predicted time in a GPU pool, so that CPU pools take it first. */
const gpuPoolPenaltyMs = 3_600_000;

/** Whether a pool's name (region and class) allows the task at all; the summary decides the rest. */
function poolMayHost(req: TaskRequirements, pool: string): boolean {
  if (req.regions !== undefined && !req.regions.includes(regionOfPool(pool))) return false;
  if (req.gpus.count === 0) return true;
  const cls = pool.slice(pool.indexOf('/') + 1);
  if (cls === cpuClass) return false;
  const entry = acceleratorTable.find((e) => e.class === cls);
  if (req.gpus.vendor !== undefined && entry !== undefined && entry.vendor !== req.gpus.vendor) return false;
  const models = req.gpus.models ?? [];
  if (models.length === 0 || entry === undefined) return true;
  return models.some((m) => {
    const name = m.trim().toLowerCase();
    return name === cls || entry.pattern.test(` ${name.replace(/[^a-z0-9]+/g, ' ')} `);
  });
}

export const unplaceableMessage = 'waiting for a live node that fits this task';
/** The progress message of a gang's tasks while its pool has fewer live nodes that fit than the gang needs. */
export const gangShortMessage = (needed: number, live: number): string =>
  `waiting for ${needed} nodes that fit; ${live} live`;

/** What routing reads of the fleet: per-pool summaries (functions/domain/resource/pool-summary.ts). */
export interface FleetCapacity {
  /** The summaries of every known pool, cached for a short while. */
  all(): Promise<PoolSummary[]>;
  /** Every known pool's name, cached for a short while. */
  pools(): Promise<string[]>;
  /** One pool's summary, cached for a short while. */
  get(pool: string): Promise<PoolSummary>;
  /** Makes a pool known to {@link FleetCapacity.all} (idempotent, once per pool and process). */
  ensurePool(pool: string): Promise<void>;
  invalidate(): void;
}

/** Where a sweep of the unrouted tasks stands; kept in memory (a restart starts a new sweep). */
interface Sweep {
  /** The fleet capacity the sweep runs under: when it changes, every task is worth trying again. */
  mark: string;
  cursor?: string;
  /** Tasks tried under `mark` that no pool took. */
  tried: Set<string>;
  /** When the last pass over the whole list ended; undefined while the first is under way. */
  passEndedAt?: number;
}

/**
 * Routes each queued task to the pool (region x accelerator class) where it is predicted to finish
 * soonest: the queue's wait (tasks queued per slot times the predicted run time), plus the run
 * time on that pool's class (the learned {@link PerformanceView}), read from the pools' summaries
 * (counters kept by the writes themselves), never from a scan of nodes. A pool that fills up
 * predicts a longer wait, so tasks spill over to the next best pool that fits. A task that no live
 * node fits stays unrouted; {@link Router.routeUnrouted} offers it again when capacity changes.
 *
 * Until pool summaries are populated (no pool known), routing falls back to a snapshot of the live
 * nodes, as the first scheduler did.
 */
export class Router {
  private capacity: { at: number; nodes: NodeRecord[] } | undefined;
  /** Tasks routed by this process to each pool since the summary it last read (the summary lags by its cache). */
  private readonly routedSince = new Map<string, { summary: PoolSummary; count: number }>();
  private sweep: Sweep | undefined;

  constructor(
    private readonly store: Store,
    private readonly registry: NodeRegistry,
    private readonly signal: Signal,
    private readonly hints: WorkHints,
    private readonly clock: Clock,
    private readonly summaries?: FleetCapacity,
    private readonly performance: PerformanceView = neutralPerformance,
  ) {}

  /** Routes the unrouted tasks among `tasks`. Returns how many were routed. */
  async route(tasks: readonly StoredItem<TaskRecord>[]): Promise<number> {
    let routed = 0;
    for (const item of tasks) {
      if (item.data.state !== 'queued' || item.data.pool !== undefined) continue;
      if (await this.routeOne(item)) routed++;
    }
    return routed;
  }

  private async routeOne(item: StoredItem<TaskRecord>): Promise<boolean> {
    const task = item.data;
    const pool = await this.choosePool(task);
    const now = this.clock.now();
    if (pool === undefined) {
      if (task.progress?.message === unplaceableMessage) return false;
      return this.write(item, { ...task, progress: { message: unplaceableMessage, updatedAt: now } }, undefined);
    }
    const { progress: _waiting, ...rest } = task;
    const short = await this.gangShortfall(task, pool);
    return this.write(
      item,
      {
        ...rest,
        pool,
        updatedAt: now,
        ...(short === undefined ? {} : { progress: { message: short, updatedAt: now } }),
      },
      pool,
    );
  }

  /**
   * A gang routed to a pool with fewer live nodes that may fit than it has tasks cannot be bound
   * until more join: its tasks say so ("waiting for N nodes that fit; M live") rather than wait
   * silently. Undefined for other tasks, or when the pool has enough (or no summary to tell).
   */
  private async gangShortfall(task: TaskRecord, pool: string): Promise<string | undefined> {
    const size = task.gangSize ?? 0;
    if (size <= 1 || this.summaries === undefined) return undefined;
    const live = liveNodesFitting(task.requirements, await this.summaries.get(pool));
    return live < size ? gangShortMessage(size, live) : undefined;
  }

  private async write(item: StoredItem<TaskRecord>, next: TaskRecord, pool: string | undefined): Promise<boolean> {
    try {
      await this.store.transact(putTask(next, item.version));
    } catch (error) {
      if (error instanceof ConditionFailedError) return false; // someone else moved the task first
      throw error;
    }
    if (pool !== undefined) {
      const seen = this.routedSince.get(pool);
      if (seen !== undefined) seen.count++;
      // One waiting poll of a node that can run it is woken, not every poll of the pool.
      this.signal.notify(pool, workSignal(next.id, next.requirements, next));
      await this.hint(next);
      return true;
    }
    return false;
  }

  /**
   * Publishes the work hint of a task queued in its pool. The routing is committed already, and a
   * hint is best effort: a failed publish is not an error, because the reaper re-publishes the hints
   * of tasks that stay queued (see `hintRedriveMs`).
   */
  async hint(task: TaskRecord): Promise<boolean> {
    if (task.pool === undefined) return false;
    try {
      await this.hints.publish({ taskId: task.id, pool: task.pool, queuedAt: isoTime(task.queuedAt) });
      return true;
    } catch {
      return false;
    }
  }

  private async choosePool(task: TaskRecord): Promise<string | undefined> {
    const names = (await this.summaries?.pools()) ?? [];
    if (this.summaries === undefined || names.length === 0) return this.choosePoolByNodes(task);
    // Only the pools whose name may fit are read: a GPU task never reads the CPU pools, nor
    // another vendor's, and a task bound to regions reads only theirs.
    const capacity = this.summaries;
    const summaries = await Promise.all(
      names.filter((pool) => poolMayHost(task.requirements, pool)).map((pool) => capacity.get(pool)),
    );
    let best: { pool: string; score: number } | undefined;
    for (const summary of summaries) {
      if (!fitsSummary(task.requirements, summary)) continue;
      const score = this.predictedCompletionMs(task, summary);
      if (best === undefined || score < best.score) best = { pool: summary.pool, score };
    }
    return best?.pool;
  }

  /**
   * When a task routed to this pool now is predicted to finish: the wait for one of the pool's
   * slots (queued tasks per slot, each taking the class's run time), then its own run time, plus a
   * round trip to a node. The queue counts the tasks this process routed since it read the summary,
   * so a burst spills over to the next pool as soon as this one's queue outgrows it.
   */
  private predictedCompletionMs(task: TaskRecord, summary: PoolSummary): number {
    const cls = summary.pool.slice(summary.pool.indexOf('/') + 1);
    const runtime = this.performance.runtimeMs(task.workload ?? defaultWorkload, cls);
    const gpus = task.requirements.gpus.count;
    const slots = Math.max(1, gpus > 0 ? Math.floor(summary.liveGpus / gpus) : summary.liveNodes);
    const queued = summary.queued + this.routedSinceRead(summary);
    const penalty = gpus === 0 && cls !== cpuClass ? gpuPoolPenaltyMs : 0;
    return (queued / slots) * runtime + runtime + this.performance.latencyMs('') + penalty;
  }

  private routedSinceRead(summary: PoolSummary): number {
    const seen = this.routedSince.get(summary.pool);
    if (seen?.summary === summary) return seen.count;
    this.routedSince.set(summary.pool, { summary, count: 0 });
    return 0;
  }

  /**
   * The first scheduler's choice, over a snapshot of live nodes: used only while no pool is listed
   * in the summaries. It lists the pools it finds, so the next routing reads summaries instead.
   */
  private async choosePoolByNodes(task: TaskRecord): Promise<string | undefined> {
    const nodes = await this.liveNodes();
    const fitting = new Map<string, number>();
    for (const node of nodes) {
      const gpus = fitOnNode(task.requirements, node.inventory);
      if (gpus === undefined) continue;
      const first = node.inventory.gpus.find((g) => g.index === gpus[0]);
      const pools = first === undefined ? node.pools : [poolId(node.inventory.region, acceleratorClass(first))];
      for (const pool of pools) fitting.set(pool, (fitting.get(pool) ?? 0) + 1);
    }
    let best: { pool: string; score: number } | undefined;
    for (const [pool, nodeCount] of fitting) {
      // Listed from now on, so routing reads the summaries instead of this snapshot.
      await this.summaries?.ensurePool(pool);
      const depth = await this.depth(pool);
      // A task that needs no GPU should not queue in front of GPU work when a CPU pool exists.
      const gpuPenalty = task.requirements.gpus.count === 0 && !pool.endsWith(`/${cpuClass}`) ? 1000 : 0;
      const score = (depth + 1) / nodeCount + gpuPenalty;
      if (best === undefined || score < best.score) best = { pool, score };
    }
    return best?.pool;
  }

  private async depth(pool: string): Promise<number> {
    const page = await this.store.query({ index: 'byPool', pk: poolPk(pool), limit: 1000 });
    return page.items.length;
  }

  private async liveNodes(): Promise<NodeRecord[]> {
    const now = this.clock.now();
    if (this.capacity === undefined || now - this.capacity.at > capacityTtlMs) {
      this.capacity = { at: now, nodes: await this.registry.liveNodes() };
    }
    return this.capacity.nodes;
  }

  /** Forgets the capacity snapshot and summaries, e.g. after a node registered. */
  invalidate(): void {
    this.capacity = undefined;
    this.summaries?.invalidate();
  }

  /**
   * The reaper's re-drive of unrouted tasks queued before `before` (their schedule message was
   * lost, or no live node fitted them), looking at `budget` tasks at most. It does not offer the
   * same tasks again every tick: a sweep pages through the list with a cursor that the next tick
   * resumes, skips tasks it already tried under the fleet capacity it runs under, and once it
   * has passed over the whole list it starts again only when capacity changed (a pool's live
   * nodes or what they offer) or {@link resweepMs} passed. Returns how many tasks were routed.
   */
  async routeUnrouted(before: number, budget: number): Promise<number> {
    const now = this.clock.now();
    const mark = await this.capacityMark();
    let sweep = this.sweep;
    if (sweep === undefined || sweep.mark !== mark || sweep.tried.size > maxTriedRemembered) {
      sweep = { mark, tried: new Set() };
    } else if (sweep.passEndedAt !== undefined) {
      if (now - sweep.passEndedAt < resweepMs) return 0; // nothing changed since the last pass
      sweep = { mark, tried: new Set() };
    }
    this.sweep = sweep;
    let routed = 0;
    let looked = 0;
    let young = false;
    while (looked < budget) {
      const page = await this.store.query<TaskRecord>({
        index: 'byPool',
        pk: poolPk(unroutedPool),
        limit: budget - looked,
        ...(sweep.cursor === undefined ? {} : { cursor: sweep.cursor }),
      });
      for (const item of page.items) {
        looked++;
        const task = item.data;
        if (task.queuedAt >= before) {
          // Too young to route yet: this pass has not offered it, so it cannot count as done.
          young = true;
          continue;
        }
        if (sweep.tried.has(task.id)) continue;
        if (await this.routeOne(item)) routed++;
        else sweep.tried.add(task.id);
      }
      if (page.cursor === undefined) {
        // The whole list seen: a new pass begins when capacity changes or after resweepMs (at
        // once while a task was too young to offer, or it would wait resweepMs under a new capacity).
        delete sweep.cursor;
        if (!young) sweep.passEndedAt = now;
        break;
      }
      sweep.cursor = page.cursor;
    }
    return routed;
  }

  /**
   * A fingerprint of what the fleet offers: every pool's live nodes and capability histogram from
   * the summaries (not their queue counters), or the live nodes' ids and pools while no summary
   * exists. Equal marks mean no task that fitted nowhere can fit now.
   */
  private async capacityMark(): Promise<string> {
    const summaries = (await this.summaries?.all()) ?? [];
    if (summaries.length > 0) {
      return summaries
        .map((s) => {
          const { queued: _queued, ...fields } = s.fields;
          const counts = Object.keys(fields)
            .sort()
            .map((name) => `${name}=${fields[name]}`);
          return `${s.pool}:${counts.join(',')}`;
        })
        .sort()
        .join(';');
    }
    return (await this.liveNodes())
      .map((node) => `${node.id}:${node.pools.join(',')}:${node.attestation?.level ?? ''}`)
      .sort()
      .join(';');
  }
}
