import { type Assignment, parseTaskId } from '../../../protocol/index.js';
import type { Clock } from '../../ports/clock.js';
import type { Keys } from '../../ports/keys.js';
import type { Signal } from '../../ports/signal.js';
import { ConditionFailedError, type Store, type StoredItem } from '../../ports/store.js';
import { ConflictError, NotFoundError } from '../errors.js';
import { isoTime } from '../records.js';
import { attestationFits, demandOf, fitOnNode, type HeldTask, type TaskRequirements } from '../resource/fit.js';
import { type NodeRecord, nodeKey, putNode } from '../resource/node-record.js';
import type { NodeRegistry } from '../resource/node-registry.js';
import { canReceive, sealEnvToNode } from '../security/seal-to-node.js';
import { type JobRecord, jobKey } from './job-record.js';
import { markSeen } from './node-seen.js';
import { claim, type LeaseSettings } from './task-machine.js';
import { poolPk, putTask, type TaskRecord, taskKey } from './task-record.js';

/** Rounds a claim retries when only the node item moved (a heartbeat's touch, a racing poll's claim). */
const claimRounds = 8;

/**
 * A node's item as one poll round read it, and the tasks it holds: read lazily, pruned at most
 * once per round, read again when a claim finds that the item moved.
 */
interface Holding {
  node: NodeRecord;
  version: number;
  held: HeldTask[];
  pruned: boolean;
}

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
 *
 * A node holds no more than it has: the node item lists the tasks it holds (`held`, with their
 * GPUs, cores and memory), the fit check takes those off the node's inventory, and the claim
 * writes the task and the node item in one transaction, each conditional on the version read. Two
 * polls of one node therefore never hand out the same GPU, and never more GPUs than it has.
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
    const node = await markSeen(this.registry, nodeId);
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
    const node = await markSeen(this.registry, nodeId);
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
    const outcome = await this.tryClaimTask(await this.readHolding(nodeId), item);
    if (outcome === 'does_not_fit') {
      throw new ConflictError('does_not_fit', `node ${nodeId} does not fit the requirements of task ${taskId}`);
    }
    if (outcome === 'busy') {
      // The same code as a misfit: the agent hands the hint back so that another node may take it.
      throw new ConflictError(
        'does_not_fit',
        `node ${nodeId} has no room for task ${taskId} beside the tasks it holds`,
        { reason: 'busy' },
      );
    }
    if (outcome === undefined) throw notAvailable(taskId, 'another node claimed it first, or it is past its deadline');
    return outcome;
  }

  private async tryClaim(node: NodeRecord): Promise<Assignment | undefined> {
    let holding: Holding | undefined;
    for (const pool of node.pools) {
      const page = await this.store.query<TaskRecord>({
        index: 'byPool',
        pk: poolPk(pool),
        limit: this.settings.scanLimit,
      });
      for (const item of page.items) {
        if (fitOnNode(item.data.requirements, node.inventory) === undefined) continue;
        holding ??= await this.readHolding(node.id);
        const assignment = await this.tryClaimTask(holding, item);
        if (typeof assignment === 'object') return assignment;
      }
    }
    return undefined;
  }

  private async readHolding(nodeId: string): Promise<Holding> {
    const item = await this.store.get<NodeRecord>(nodeKey(nodeId));
    if (item === undefined) throw new NotFoundError('node_not_found', `no node ${nodeId}`);
    return { node: item.data, version: item.version, held: item.data.held ?? [], pruned: false };
  }

  /**
   * The GPU indices the task would get beside what the node holds. When it does not fit, the
   * held list is pruned first (once per round): one read per held task, and a node holds at most
   * as many tasks as it has GPUs and cores, so the cost is bounded and no index is scanned.
   */
  private async roomFor(holding: Holding, req: TaskRequirements): Promise<number[] | undefined> {
    const fit = fitOnNode(req, holding.node.inventory, holding.held);
    if (fit !== undefined || holding.pruned || holding.held.length === 0) return fit;
    const stillHeld = await Promise.all(
      holding.held.map(async (h) => {
        const { jobId, index } = parseTaskId(h.taskId);
        const t = (await this.store.get<TaskRecord>(taskKey(jobId, index)))?.data;
        // Finished, expired or requeued, or taken by another attempt: the node no longer holds it.
        return (
          t !== undefined &&
          (t.state === 'assigned' || t.state === 'running') &&
          t.nodeId === holding.node.id &&
          t.attempt === h.attempt
        );
      }),
    );
    holding.held = holding.held.filter((_, i) => stillHeld[i]);
    holding.pruned = true;
    return fitOnNode(req, holding.node.inventory, holding.held);
  }

  /**
   * Binds the task to the node; undefined when it was not available after all, `busy` when the
   * node could run it but not beside what it holds now.
   */
  private async tryClaimTask(
    holding: Holding,
    item: StoredItem<TaskRecord>,
  ): Promise<Assignment | 'does_not_fit' | 'busy' | undefined> {
    const now = this.clock.now();
    const task = item.data;
    if (task.deadline !== undefined && task.deadline <= now) return undefined; // the reaper fails it
    if (fitOnNode(task.requirements, holding.node.inventory) === undefined) return 'does_not_fit';
    // Attestation is read from the record the claim writes against, so a level that lapses is seen.
    if (!attestationFits(task.requirements, holding.node.attestation, now)) return 'does_not_fit';
    const job = await this.store.get<JobRecord>(jobKey(task.jobId));
    if (job === undefined) return undefined;
    // A job with env secrets goes only to a node that can open them (it registered a sealing key).
    if (!canReceive(holding.node, job.data)) return 'does_not_fit';
    let bound: { claimed: TaskRecord; gpuIndices: number[] } | undefined;
    for (let round = 0; round < claimRounds && bound === undefined; round++) {
      const gpuIndices = await this.roomFor(holding, task.requirements);
      if (gpuIndices === undefined) return 'busy';
      const inventory = holding.node.inventory;
      const uuids = gpuIndices.map((i) => inventory.gpus.find((g) => g.index === i)?.uuid ?? String(i));
      const claimed = claim(task, holding.node.id, gpuIndices, uuids, now, this.settings.leaseMs);
      const entry: HeldTask = {
        taskId: claimed.id,
        attempt: claimed.attempt,
        gpuIndices,
        ...demandOf(task.requirements),
      };
      const node: NodeRecord = { ...holding.node, held: [...holding.held, entry] };
      try {
        await this.store.transact([putTask(claimed, item.version), putNode(node, holding.version)]);
        Object.assign(holding, { node, version: holding.version + 1, held: node.held });
        bound = { claimed, gpuIndices };
      } catch (error) {
        if (!(error instanceof ConditionFailedError)) throw error;
        if (error.failed.includes(1)) Object.assign(holding, await this.readHolding(holding.node.id));
        if (error.failed.includes(0)) return undefined; // another node took the task first
      }
    }
    if (bound === undefined) return undefined;
    // Only the winner of the claim pays for the unwrap (a KMS call in the cloud). If it fails, the
    // poll fails and the lease runs out: the reaper requeues the task.
    const sealedEnv = await sealEnvToNode(this.keys, job.data, holding.node, bound.claimed);
    const { claimed, gpuIndices } = bound;
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
      ...(sealedEnv === undefined ? {} : { sealedEnv }),
      ...(spec.resultKey === undefined ? {} : { resultKey: spec.resultKey }),
      timeoutSeconds: claimed.timeoutSeconds,
      gpuIndices,
    };
  }
}

const notAvailable = (taskId: string, why: string) =>
  new ConflictError('task_not_available', `task ${taskId} cannot be claimed: ${why}`, { taskId });
