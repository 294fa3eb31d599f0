import { type Assignment, parseTaskId } from '../../../protocol/index.js';
import type { Clock } from '../../ports/clock.js';
import type { Keys } from '../../ports/keys.js';
import type { Signal } from '../../ports/signal.js';
import { ConditionFailedError, type Store, type StoredItem } from '../../ports/store.js';
import { ConflictError, NotFoundError } from '../errors.js';
import { isoTime } from '../records.js';
import { fitOnNode } from '../resource/fit.js';
import type { NodeRecord } from '../resource/node-record.js';
import type { NodeRegistry } from '../resource/node-registry.js';
import { openJobEnv } from '../security/job-secrets.js';
import { type JobRecord, jobKey } from './job-record.js';
import { claim, type LeaseSettings } from './task-machine.js';
import { poolPk, putTask, type TaskRecord, taskKey } from './task-record.js';

export interface DispatchSettings extends LeaseSettings {
  /** How often a waiting poll re-reads its pools even without a wake-up signal. */
  recheckMs: number;
  /** Queued tasks looked at per pool and poll. */
  scanLimit: number;
}

/**
 * Late binding: a task is bound to a node only when that node asks for work and fits the task.
 * The claim is a conditional write on the version the poll read, so of two nodes racing for one
 * task exactly one wins; the loser moves on to the next candidate.
 */
export class Dispatcher {
  constructor(
    private readonly store: Store,
    private readonly registry: NodeRegistry,
    private readonly keys: Keys,
    private readonly signal: Signal,
    private readonly clock: Clock,
    private readonly settings: DispatchSettings,
  ) {}

  /** Waits up to `waitSeconds` for a task this node fits; undefined when none came. */
  async poll(nodeId: string, waitSeconds: number, abort?: AbortSignal): Promise<Assignment | undefined> {
    const node = await this.registry.touch(nodeId);
    const until = this.clock.now() + waitSeconds * 1000;
    for (;;) {
      const assignment = await this.tryClaim(node);
      if (assignment !== undefined) return assignment;
      const left = until - this.clock.now();
      if (left <= 0 || abort?.aborted) return undefined;
      await this.signal.wait(node.pools, Math.min(left, this.settings.recheckMs), abort);
      if (abort?.aborted) return undefined;
    }
  }

  /**
   * Claims one named task, as a node that learned of it from a work hint: the same conditional
   * write as {@link Dispatcher.poll} binds it, or the claim is refused and nothing changes.
   *
   * @throws {@link NotFoundError} `task_not_found` when no such task exists.
   * @throws {@link ConflictError} `task_not_available` when the task is not queued in one of the
   *   node's pools (taken by another node, not routed there, finished, past its deadline), or
   *   `does_not_fit` when the node cannot run it.
   */
  async claim(nodeId: string, taskId: string): Promise<Assignment> {
    const node = await this.registry.touch(nodeId);
    const { jobId, index } = parseTaskId(taskId);
    const item =
      Number.isInteger(index) && index >= 0 ? await this.store.get<TaskRecord>(taskKey(jobId, index)) : undefined;
    if (item === undefined || item.data.id !== taskId) {
      throw new NotFoundError('task_not_found', `task ${taskId} does not exist`);
    }
    const task = item.data;
    if (task.state !== 'queued' || task.pool === undefined || !node.pools.includes(task.pool)) {
      throw notAvailable(
        taskId,
        task.state === 'queued' ? "it is not queued in one of this node's pools" : `it is ${task.state}`,
      );
    }
    const outcome = await this.tryClaimTask(node, item);
    if (outcome === 'does_not_fit') {
      throw new ConflictError('does_not_fit', `node ${nodeId} does not fit the requirements of task ${taskId}`);
    }
    if (outcome === undefined) throw notAvailable(taskId, 'another node claimed it first, or it is past its deadline');
    return outcome;
  }

  private async tryClaim(node: NodeRecord): Promise<Assignment | undefined> {
    for (const pool of node.pools) {
      const page = await this.store.query<TaskRecord>({
        index: 'byPool',
        pk: poolPk(pool),
        limit: this.settings.scanLimit,
      });
      for (const item of page.items) {
        const assignment = await this.tryClaimTask(node, item);
        if (assignment !== undefined && assignment !== 'does_not_fit') return assignment;
      }
    }
    return undefined;
  }

  /** Binds the task to the node; undefined when it was not available after all. */
  private async tryClaimTask(
    node: NodeRecord,
    item: StoredItem<TaskRecord>,
  ): Promise<Assignment | 'does_not_fit' | undefined> {
    const now = this.clock.now();
    const task = item.data;
    if (task.deadline !== undefined && task.deadline <= now) return undefined; // the reaper fails it
    const gpuIndices = fitOnNode(task.requirements, node.inventory);
    if (gpuIndices === undefined) return 'does_not_fit';
    const job = await this.store.get<JobRecord>(jobKey(task.jobId));
    if (job === undefined) return undefined;
    const uuids = gpuIndices.map((i) => node.inventory.gpus.find((g) => g.index === i)?.uuid ?? String(i));
    const env = await openJobEnv(this.keys, job.data.id, job.data);
    const claimed = claim(task, node.id, gpuIndices, uuids, now, this.settings.leaseMs);
    try {
      await this.store.transact([putTask(claimed, item.version)]);
    } catch (error) {
      if (error instanceof ConditionFailedError) return undefined;
      throw error;
    }
    const spec = job.data.spec;
    return {
      taskId: claimed.id,
      jobId: claimed.jobId,
      index: claimed.index,
      taskCount: claimed.taskCount,
      attempt: claimed.attempt,
      leaseExpiresAt: isoTime(claimed.leaseExpiresAt ?? now),
      leaseMs: this.settings.leaseMs,
      ...(spec.image === undefined ? {} : { image: spec.image }),
      command: spec.command,
      env,
      timeoutSeconds: claimed.timeoutSeconds,
      gpuIndices,
    };
  }
}

const notAvailable = (taskId: string, why: string) =>
  new ConflictError('task_not_available', `task ${taskId} cannot be claimed: ${why}`, { taskId });
