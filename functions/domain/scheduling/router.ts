import type { Clock } from '../../ports/clock.js';
import type { Signal } from '../../ports/signal.js';
import { ConditionFailedError, type Store, type StoredItem } from '../../ports/store.js';
import type { WorkHints } from '../../ports/work-hints.js';
import { isoTime, sortableTime } from '../records.js';
import { fitOnNode } from '../resource/fit.js';
import type { NodeRecord } from '../resource/node-record.js';
import type { NodeRegistry } from '../resource/node-registry.js';
import { acceleratorClass, cpuClass, poolId } from '../resource/pools.js';
import { poolPk, putTask, type TaskRecord, unroutedPool } from './task-record.js';
import { workSignal } from './work-signal.js';

/** How long a snapshot of live nodes is reused while routing a burst of tasks. */
const capacityTtlMs = 1000;

export const unplaceableMessage = 'waiting for a live node that fits this task';

/**
 * The first scheduler: routes each queued task to the pool (region x accelerator class) where it
 * is expected to start soonest, estimated as queued tasks per fitting live node. A task that no
 * live node fits stays unrouted; the reaper offers it again as nodes come and go.
 */
export class Router {
  private capacity: { at: number; nodes: NodeRecord[] } | undefined;

  constructor(
    private readonly store: Store,
    private readonly registry: NodeRegistry,
    private readonly signal: Signal,
    private readonly hints: WorkHints,
    private readonly clock: Clock,
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
    return this.write(item, { ...rest, pool, updatedAt: now }, pool);
  }

  private async write(item: StoredItem<TaskRecord>, next: TaskRecord, pool: string | undefined): Promise<boolean> {
    try {
      await this.store.transact(putTask(next, item.version));
    } catch (error) {
      if (error instanceof ConditionFailedError) return false; // someone else moved the task first
      throw error;
    }
    if (pool !== undefined) {
      // One waiting poll of a node that can run it is woken, not every poll of the pool.
      this.signal.notify(pool, workSignal(next.id, next.requirements));
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

  /** Forgets the capacity snapshot, e.g. after a node registered. */
  invalidate(): void {
    this.capacity = undefined;
  }

  /** Unrouted tasks queued before `before`, oldest first: the reaper's re-drive list. */
  async unrouted(before: number, limit: number): Promise<StoredItem<TaskRecord>[]> {
    const page = await this.store.query<TaskRecord>({
      index: 'byPool',
      pk: poolPk(unroutedPool),
      skBefore: sortableTime(before),
      limit,
    });
    return page.items;
  }
}
