import { type Assignment, parseTaskId } from '../../../protocol/index.js';
import type { Clock } from '../../ports/clock.js';
import { type Keys, KeyUnwrapError } from '../../ports/keys.js';
import type { Queue } from '../../ports/queue.js';
import type { Signal, SignalWake } from '../../ports/signal.js';
import { ConditionFailedError, type Store, type StoredItem, type Write } from '../../ports/store.js';
import { ConflictError, NotFoundError } from '../errors.js';
import { isoTime } from '../records.js';
import { attestationFits, demandOf, fitOnNode, type HeldTask, type TaskRequirements } from '../resource/fit.js';
import { type NodeRecord, nodeKey, putNode } from '../resource/node-record.js';
import type { NodeRegistry } from '../resource/node-registry.js';
import type { PoolSummary } from '../resource/pool-summary.js';
import { canReceive, sealEnvToNode } from '../security/seal-to-node.js';
import { DispatchUnavailableError } from './errors.js';
import {
  type GangHandOut,
  type GangMember,
  type GangRecord,
  gangKey,
  gangMarginMs,
  gangTopic,
  handOutFor,
  heldByOtherPoll,
  isMember,
  newPollId,
  waitingMembers,
  withHandOuts,
} from './gang.js';
import { type JobRecord, jobKey, jobPk } from './job-record.js';
import { requestScheduling } from './messages.js';
import { markSeen } from './node-seen.js';
import { claim, type LeaseSettings, recordFailure } from './task-machine.js';
import { poolPk, putTask, type TaskRecord, taskKey } from './task-record.js';
import { TenantShares, unitsOf } from './tenant-shares.js';
import type { WaitingNode } from './waiting-placement.js';
import { acceptsWork, passedOn } from './work-signal.js';

/** Rounds a claim retries when only the node item moved (a heartbeat's touch, a racing poll's claim). */
const claimRounds = 8;
/** How long a retry is left to other nodes than those it failed on; then any node that fits may take it. */
const avoidForMs = 60_000;
/** Pages of one pool's queue a poll round reads at most, past tasks the node cannot run. */
const maxScanPages = 8;
/**
 * Extra pages a poll reads while every task it read is one tenant's, so fair share sees the others
 * (the pool queue sorts by priority before tenant). The bound keeps a single tenant's deep queue at
 * four reads a poll; a tenant with more than that many pages queued above another's priority can
 * still hold it back until its run drains below the window.
 */
const tenantLookAheadPages = 3;

const singleTenant = (items: readonly StoredItem<TaskRecord>[]): boolean =>
  items.every((item) => item.data.tenant === items[0]?.data.tenant);
/** Rounds a give-back retries when the task or node item moved under it; then the lease runs out instead. */
const giveBackRounds = 4;

/** Where the dispatcher reports what it skipped; one JSON object per entry, as the deployments log. */
export type DispatchLog = (entry: Record<string, unknown>) => void;
const logToStderr: DispatchLog = (entry) =>
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level: 'warn', ...entry })}\n`);

/** What one candidate came to: an assignment, or why not. `given_back`: claimed, then handed back at once. */
type CandidateOutcome = Assignment | 'does_not_fit' | 'busy' | 'given_back' | 'gang_waiting' | undefined;

/** What one long poll carries between its rounds: when it ends, its identity in gangs, the gangs it joined (gang.ts). */
interface PollContext {
  until: number;
  /** Names this poll (not just its node) in gang records: a node's other polls neither join for it nor collect its task. */
  poll: string;
  joined: Set<string>;
}

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
  /**
   * The signal lets the placement engine choose which waiting poll a task wakes
   * (waiting-placement.ts): each round then reads the node's item and prunes what it holds, so
   * that its wait tells the engine the node's free capacity. Off where no one chooses (Lambda).
   */
  describeWaiters?: boolean;
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
 *
 * Each candidate is isolated: one whose job cannot be read or whose key does not open is skipped
 * (and not tried again by the same poll), and the poll goes on to the next. The poll fails, with a
 * retryable {@link DispatchUnavailableError}, only when it handed out nothing and a candidate met a
 * fault that passes. A claim won for an assignment that cannot be built is given back at once
 * ({@link Dispatcher.giveBack}), so neither the task nor the node's slot waits for the lease.
 */
export class Dispatcher {
  /** Recent work per tenant: the order among queued tasks of equal priority (fair share). */
  private readonly shares = new TenantShares();

  constructor(
    private readonly store: Store,
    private readonly queue: Queue,
    private readonly registry: NodeRegistry,
    private readonly keys: Keys,
    private readonly signal: Signal,
    private readonly clock: Clock,
    private readonly settings: DispatchSettings,
    private readonly log: DispatchLog = logToStderr,
    /** Pool summaries (live nodes per pool), read only to decide whether a retry may avoid a node. */
    private readonly summaries?: { get(pool: string): Promise<PoolSummary> },
  ) {}

  /** Waits up to `waitSeconds` for a task this node fits; undefined when none came. */
  async poll(nodeId: string, waitSeconds: number, abort?: AbortSignal): Promise<Assignment | undefined> {
    const node = await markSeen(this.registry, nodeId);
    const until = this.clock.now() + waitSeconds * 1000;
    const ctx: PollContext = { until, poll: newPollId(), joined: new Set() };
    // Each failure costs its task a release or an attempt: this poll does not try that task again.
    const failed = new Set<string>();
    const accepts = acceptsWork(node, () => this.clock.now());
    let wake: SignalWake | undefined;
    let read = true;
    let missed: (number | undefined)[] = [];
    let busy = false;
    /** What this poll's waits tell the placement engine: the node and what it holds, as last read. */
    let waiting: WaitingNode | undefined;
    for (;;) {
      if (read) {
        // Taken before the read: a notification that woke nobody while it ran shows as a change.
        missed = node.pools.map((pool) => this.signal.missed(pool));
        // Read before the pool, so that nothing awaits between the pool's read and the wait.
        const holding = this.settings.describeWaiters ? await this.readPruned(nodeId) : undefined;
        const round = await this.tryClaim(node, failed, ctx, holding);
        if (holding !== undefined) waiting = { node: holding.node, held: holding.held };
        busy = round.busy;
        // A wake this poll did not use (it got another task, or none) goes on to another waiter.
        if (wake !== undefined && round.assignment?.taskId !== taskOf(wake.payload)) this.passOn(wake);
        if (round.assignment !== undefined) {
          await this.leaveGangs(node.id, ctx);
          return round.assignment;
        }
        if (round.fault !== undefined) {
          await this.leaveGangs(node.id, ctx);
          throw round.fault instanceof DispatchUnavailableError
            ? round.fault
            : new DispatchUnavailableError(`no task could be handed to node ${nodeId}: ${describe(round.fault)}`, {
                cause: round.fault,
              });
        }
      }
      const left = until - this.clock.now();
      if (left <= 0 || abort?.aborted) return this.endPoll(node, ctx);
      // A task routed while this round read woke nobody (this poll was not waiting yet): read again
      // now, not at the next recheck. From here to the wait's registration nothing awaits.
      if (read && node.pools.some((pool, i) => missed[i] !== undefined && missed[i] !== this.signal.missed(pool))) {
        wake = undefined;
        continue;
      }
      const topics = [...node.pools, ...[...ctx.joined].map((jobId) => gangTopic(jobId, node.id))];
      // A poll waiting in a gang is not offered to placement: its node is spoken for, and a node
      // that joined would otherwise be the best again for each of its gang's other tasks.
      const candidate = ctx.joined.size === 0 ? waiting : undefined;
      wake = await this.signal.wait(topics, Math.min(left, this.settings.recheckMs), abort, accepts, candidate);
      if (abort?.aborted) return this.endPoll(node, ctx);
      // Woken for a task, or work may have come that woke nobody, or the node was full: read again.
      // Otherwise nothing changed since the last read (the storm of idle polls re-reading every second).
      read =
        wake !== undefined ||
        busy ||
        node.pools.some((pool, i) => missed[i] !== this.signal.missed(pool) || missed[i] === undefined);
    }
  }

  /** Hands a wake that a poll did not use to another waiting poll (see {@link maxSignalPasses}). */
  private passOn(wake: SignalWake): void {
    const next = passedOn(wake.payload);
    if (next !== undefined) this.signal.notify(wake.topic, next);
  }

  /**
   * Claims one named task, as a node that learned of it from a work hint: the same conditional
   * write as {@link Dispatcher.poll} binds it, or the claim is refused and nothing changes.
   *
   * @throws {@link NotFoundError} `task_not_found` when no such task exists.
   * @throws {@link ConflictError} `task_not_available` when the task is not queued in one of the
   *   node's pools (taken by another node, not routed there, finished, past its deadline, its
   *   job's key does not open), or `does_not_fit` when the node cannot run it.
   * @throws {@link DispatchUnavailableError} when the job's key cannot be opened now (the claim
   *   was given back as a release).
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
    if ((task.gangSize ?? 0) > 1) {
      throw notAvailable(taskId, 'it starts together with its gang, which only long polls assemble');
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
    if (outcome === 'given_back') throw notAvailable(taskId, "its job's key could not be opened");
    if (outcome === undefined || outcome === 'gang_waiting') {
      throw notAvailable(taskId, 'another node claimed it first, or it is past its deadline');
    }
    return outcome;
  }

  /**
   * One round over the node's pools. A candidate that throws is logged, remembered in `failed`
   * and skipped; the first fault comes back with the round's outcome. Only the pool query and the
   * node's own item fail the round: without them there is nothing to try.
   */
  private async tryClaim(
    node: NodeRecord,
    failed: Set<string>,
    ctx: PollContext,
    read?: Holding,
  ): Promise<{ assignment?: Assignment; fault?: unknown; busy: boolean }> {
    let holding: Holding | undefined = read;
    let fault: unknown;
    let busy = false;
    // A gang this poll joined may have been bound by another member's poll: its task is here.
    for (const jobId of ctx.joined) {
      holding ??= await this.readHolding(node.id);
      const assignment = await this.collectGang(holding, jobId, ctx);
      if (assignment !== undefined) return { assignment, busy };
    }
    // Whether the node could ever run a task, by requirement shape: tasks of one job share theirs.
    const fits = new Map<string, boolean>();
    const couldRun = (req: TaskRequirements) => {
      const shape = JSON.stringify(req);
      const known = fits.get(shape);
      if (known !== undefined) return known;
      const fit = fitOnNode(req, node.inventory) !== undefined;
      fits.set(shape, fit);
      return fit;
    };
    for (const pool of node.pools) {
      for await (const page of this.queued(pool)) {
        for (const item of this.shares.order(page, this.clock.now())) {
          if (failed.has(item.data.id)) continue;
          if (!couldRun(item.data.requirements)) continue;
          if (await this.avoids(node.id, item.data, pool)) continue;
          // The node's own item is not a candidate's: without it the poll cannot go on (404 when it is gone).
          holding ??= await this.readHolding(node.id);
          try {
            if ((item.data.gangSize ?? 0) <= 1 && ctx.joined.size > 0) {
              // Other work while this poll waits in a gang: the gang must not hold the node idle.
              const bound = await this.leaveGangsFor(holding, item.data, ctx);
              if (bound === 'stay') continue;
              if (bound !== undefined) return { assignment: bound, busy };
            }
            const outcome =
              (item.data.gangSize ?? 0) > 1
                ? await this.joinGang(holding, item, ctx)
                : await this.tryClaimTask(holding, item);
            // In a gang: the poll keeps its membership while nothing behind the gang is claimable.
            if (outcome === 'gang_waiting') continue;
            if (typeof outcome === 'object') {
              this.shares.record(item.data.tenant, unitsOf(item.data), this.clock.now());
              return { assignment: outcome, busy };
            }
            if (outcome === 'given_back') failed.add(item.data.id);
            if (outcome === 'busy') busy = true;
          } catch (error) {
            failed.add(item.data.id);
            fault ??= error;
            this.log({
              msg: 'dispatch candidate skipped',
              nodeId: node.id,
              taskId: item.data.id,
              error: describe(error),
            });
          }
        }
      }
    }
    return fault === undefined ? { busy } : { fault, busy };
  }

  /**
   * A pool's queue in dispatch order (priority, then age), page by page (each page is then ordered
   * by fair share, {@link TenantShares}): past tasks that this
   * node cannot run, up to {@link maxScanPages} pages of `scanLimit`, so a small task queued behind
   * a run of big ones (head-of-line) still reaches a small node. The bound keeps a poll's reads
   * finite however deep the queue of tasks it cannot run.
   */
  private async *queued(pool: string): AsyncGenerator<StoredItem<TaskRecord>[]> {
    let cursor: string | undefined;
    let batch: StoredItem<TaskRecord>[] = [];
    for (let page = 0; page < maxScanPages; page++) {
      const result = await this.store.query<TaskRecord>({
        index: 'byPool',
        pk: poolPk(pool),
        limit: this.settings.scanLimit,
        ...(cursor === undefined ? {} : { cursor }),
      });
      batch = batch.concat(result.items);
      cursor = result.cursor;
      // The queue sorts by priority first, so one tenant's high-priority run can fill the page and
      // hide every other tenant from fair share: read on (up to tenantLookAheadPages) until another shows.
      if (cursor !== undefined && page < tenantLookAheadPages && singleTenant(batch)) continue;
      yield batch;
      batch = [];
      if (cursor === undefined) return;
    }
  }

  /**
   * Whether this node leaves a retry to others: an attempt of the task failed here before
   * (`avoidNodes`), the pool has more live nodes than the task avoids, and the retry has waited
   * less than {@link avoidForMs}. Without summaries, or with every live node of the pool avoided,
   * nothing is avoided: a retry never waits for a node that does not exist.
   */
  private async avoids(nodeId: string, task: TaskRecord, pool: string): Promise<boolean> {
    const avoided = task.avoidNodes;
    if (avoided === undefined || !avoided.includes(nodeId)) return false;
    if (this.clock.now() - task.queuedAt >= avoidForMs) return false;
    const live = (await this.summaries?.get(pool))?.liveNodes ?? 0;
    return live > avoided.length;
  }

  private async readHolding(nodeId: string): Promise<Holding> {
    const item = await this.store.get<NodeRecord>(nodeKey(nodeId));
    if (item === undefined) throw new NotFoundError('node_not_found', `no node ${nodeId}`);
    return { node: item.data, version: item.version, held: item.data.held ?? [], pruned: false };
  }

  /** The node's item with what it really holds: what a waiting poll describes to the placement engine. */
  private async readPruned(nodeId: string): Promise<Holding> {
    const holding = await this.readHolding(nodeId);
    if (holding.held.length > 0) await this.prune(holding);
    return holding;
  }

  /**
   * The GPU indices the task would get beside what the node holds. When it does not fit, the
   * held list is pruned first (once per round).
   */
  private async roomFor(holding: Holding, req: TaskRequirements): Promise<number[] | undefined> {
    const fit = fitOnNode(req, holding.node.inventory, holding.held);
    if (fit !== undefined || holding.pruned || holding.held.length === 0) return fit;
    await this.prune(holding);
    return fitOnNode(req, holding.node.inventory, holding.held);
  }

  /**
   * Drops the held entries whose task ended or moved on: one read per held task, and a node holds
   * at most as many tasks as it has GPUs and cores, so the cost is bounded and no index is scanned.
   */
  private async prune(holding: Holding): Promise<void> {
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
  }

  /**
   * Binds the task to the node; undefined when it was not available after all, `busy` when the
   * node could run it but not beside what it holds now.
   */
  private async tryClaimTask(holding: Holding, item: StoredItem<TaskRecord>): Promise<CandidateOutcome> {
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
      const taskWrites = putTask(claimed, item.version);
      try {
        await this.store.transact([...taskWrites, putNode(node, holding.version)]);
        Object.assign(holding, { node, version: holding.version + 1, held: node.held });
        bound = { claimed, gpuIndices };
      } catch (error) {
        if (!(error instanceof ConditionFailedError)) throw error;
        if (error.failed.includes(taskWrites.length)) Object.assign(holding, await this.readHolding(holding.node.id));
        if (error.failed.includes(0)) return undefined; // another node took the task first
      }
    }
    if (bound === undefined) return undefined;
    return this.handOut(holding, job.data, bound.claimed, bound.gpuIndices);
  }

  /** The assignment of a task claimed for the node: its env sealed to the node, or the claim given back. */
  private async handOut(
    holding: Holding,
    job: JobRecord,
    claimed: TaskRecord,
    gpuIndices: number[],
  ): Promise<CandidateOutcome> {
    const now = this.clock.now();
    // Only the winner of the claim pays for the unwrap (a KMS call in the cloud).
    let sealedEnv: Awaited<ReturnType<typeof sealEnvToNode>>;
    try {
      sealedEnv = await sealEnvToNode(this.keys, job, holding.node, claimed);
    } catch (error) {
      const keyIsBroken = error instanceof KeyUnwrapError;
      await this.giveBack(holding, claimed, error, keyIsBroken);
      if (keyIsBroken) return 'given_back';
      throw new DispatchUnavailableError(
        `the key of job ${claimed.jobId} could not be opened now: ${describe(error)}`,
        {
          cause: error,
        },
      );
    }
    const spec = job.spec;
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

  /**
   * Joins the gang of a queued gang task (gang.ts), or binds the whole gang when this join
   * completes it. `gang_waiting` when this poll now waits for the other members.
   */
  private async joinGang(holding: Holding, item: StoredItem<TaskRecord>, ctx: PollContext): Promise<CandidateOutcome> {
    const task = item.data;
    const now = this.clock.now();
    if (task.deadline !== undefined && task.deadline <= now) return undefined;
    if (ctx.until <= now + gangMarginMs) return undefined; // this poll would end before the gang is bound
    if (ctx.joined.has(task.jobId)) return 'gang_waiting';
    if (fitOnNode(task.requirements, holding.node.inventory) === undefined) return 'does_not_fit';
    if (!attestationFits(task.requirements, holding.node.attestation, now)) return 'does_not_fit';
    const job = await this.store.get<JobRecord>(jobKey(task.jobId));
    if (job === undefined) return undefined;
    if (!canReceive(holding.node, job.data)) return 'does_not_fit';
    if ((await this.roomFor(holding, task.requirements)) === undefined) return 'busy';
    for (let round = 0; round < giveBackRounds; round++) {
      const gang = await this.store.get<GangRecord>(gangKey(task.jobId));
      // Another poll of this node holds its place: this one passes the gang by (one place per node).
      if (heldByOtherPoll(gang?.data, now, holding.node.id, ctx.poll)) return undefined;
      const others = waitingMembers(gang?.data, now, holding.node.id);
      const queued = (
        await this.store.query<TaskRecord>({ pk: jobPk(task.jobId), skPrefix: 'TASK#', limit: 100 })
      ).items.filter((t) => t.data.state === 'queued' && (t.data.gangSize ?? 0) > 1);
      if (queued.length === 0) return undefined;
      if (others.length + 1 < queued.length) {
        const members = [...others, { nodeId: holding.node.id, until: ctx.until, poll: ctx.poll }];
        try {
          await this.store.transact([gangWrite(task.jobId, members, gang, ctx.until)]);
        } catch (error) {
          if (error instanceof ConditionFailedError) continue;
          throw error;
        }
        ctx.joined.add(task.jobId);
        return 'gang_waiting';
      }
      const outcome = await this.bindGang(holding, ctx, job.data, queued, others.slice(0, queued.length - 1), gang);
      if (outcome !== 'conflict') return outcome;
    }
    return undefined;
  }

  /**
   * Binds every queued task of a gang at once: one to this node, one to each of `others`, in one
   * transaction with their node items and the gang record (its members gone, each task's hand-out
   * named for the one poll that returns it). `conflict` when an item moved (the caller reads
   * again); a member that has no room any more is dropped from the record.
   */
  private async bindGang(
    holding: Holding,
    ctx: PollContext,
    job: JobRecord,
    queued: StoredItem<TaskRecord>[],
    others: GangMember[],
    gang: StoredItem<GangRecord> | undefined,
  ): Promise<CandidateOutcome | 'conflict'> {
    const now = this.clock.now();
    const read = await Promise.all(others.map((m) => this.readHolding(m.nodeId).catch(() => undefined)));
    const gone = others.filter((_, i) => read[i] === undefined);
    if (gone.length > 0) {
      // A member node was removed meanwhile: it leaves the gang, the others keep waiting.
      const members = (gang?.data.members ?? []).filter((m) => !gone.some((g) => g.nodeId === m.nodeId));
      await this.store.transact([gangWrite(job.id, members, gang, now + 60_000)]).catch(ignoreConflict);
      return 'conflict';
    }
    const holdings = [holding, ...(read as Holding[])];
    const writes: Write[] = [];
    const bound: { claimed: TaskRecord; gpuIndices: number[] }[] = [];
    const handOuts: GangHandOut[] = [];
    const polls = [ctx.poll, ...others.map((m) => m.poll)];
    for (const [i, member] of holdings.entries()) {
      const item = queued[i] as StoredItem<TaskRecord>;
      const gpuIndices = await this.roomFor(member, item.data.requirements);
      const fits =
        gpuIndices !== undefined &&
        attestationFits(item.data.requirements, member.node.attestation, now) &&
        canReceive(member.node, job);
      if (!fits) {
        // This member cannot take its part now: it leaves the gang, the others keep waiting.
        if (i === 0) return 'busy';
        const members = (gang?.data.members ?? []).filter((m) => m.nodeId !== member.node.id);
        await this.store.transact([gangWrite(job.id, members, gang, now + 60_000)]).catch(ignoreConflict);
        return 'conflict';
      }
      const uuids = gpuIndices.map((g) => member.node.inventory.gpus.find((d) => d.index === g)?.uuid ?? String(g));
      const claimed = claim(item.data, member.node.id, gpuIndices, uuids, now, this.settings.leaseMs);
      const entry: HeldTask = {
        taskId: claimed.id,
        attempt: claimed.attempt,
        gpuIndices,
        ...demandOf(item.data.requirements),
      };
      writes.push(
        ...putTask(claimed, item.version),
        putNode({ ...member.node, held: [...member.held, entry] }, member.version),
      );
      bound.push({ claimed, gpuIndices });
      handOuts.push({ nodeId: member.node.id, poll: polls[i] as string, taskId: claimed.id, attempt: claimed.attempt });
    }
    // Written over the version read (as its removal was before), each hand-out named for one poll only.
    const until = Math.max(ctx.until, ...others.map((m) => m.until));
    writes.push(gangWrite(job.id, [], gang, until, withHandOuts(gang?.data.bound, handOuts)));
    try {
      await this.store.transact(writes);
    } catch (error) {
      if (error instanceof ConditionFailedError) return 'conflict';
      throw error;
    }
    for (const member of others) this.signal.notify(gangTopic(job.id, member.nodeId));
    const mine = bound[0] as { claimed: TaskRecord; gpuIndices: number[] };
    const held = [
      ...holding.held,
      {
        taskId: mine.claimed.id,
        attempt: mine.claimed.attempt,
        gpuIndices: mine.gpuIndices,
        ...demandOf(mine.claimed.requirements),
      },
    ];
    Object.assign(holding, { node: { ...holding.node, held }, version: holding.version + 1, held });
    return this.handOut(holding, job, mine.claimed, mine.gpuIndices);
  }

  /**
   * The task a bound gang left for this poll, handed out; undefined while the gang waits. The bind
   * named one poll per task (gang.ts), so a node's other polls never hand the same attempt out.
   */
  private async collectGang(holding: Holding, jobId: string, ctx: PollContext): Promise<Assignment | undefined> {
    const gang = (await this.store.get<GangRecord>(gangKey(jobId)))?.data;
    const mine = handOutFor(gang, holding.node.id, ctx.poll);
    if (mine === undefined) {
      // Dropped from the gang (or it is gone): this poll no longer waits for it.
      if (!isMember(gang, holding.node.id, ctx.poll)) ctx.joined.delete(jobId);
      return undefined;
    }
    ctx.joined.delete(jobId);
    const { index } = parseTaskId(mine.taskId);
    const task = (await this.store.get<TaskRecord>(taskKey(jobId, index)))?.data;
    // Still the attempt bound to this node (not expired, requeued or failed since).
    if (task?.state !== 'assigned' || task.nodeId !== holding.node.id || task.attempt !== mine.attempt)
      return undefined;
    const job = await this.store.get<JobRecord>(jobKey(jobId));
    if (job === undefined) return undefined;
    const outcome = await this.handOut(holding, job.data, task, task.gpuIndices ?? []);
    return typeof outcome === 'object' ? outcome : undefined;
  }

  /** A poll that ends without work: a gang bound meanwhile is still handed out, else it leaves its gangs. */
  private async endPoll(node: NodeRecord, ctx: PollContext): Promise<Assignment | undefined> {
    if (ctx.joined.size === 0) return undefined;
    const holding = await this.readHolding(node.id);
    for (const jobId of [...ctx.joined]) {
      const assignment = await this.collectGang(holding, jobId, ctx);
      if (assignment !== undefined) {
        await this.leaveGangs(node.id, ctx);
        return assignment;
      }
    }
    await this.leaveGangs(node.id, ctx);
    return undefined;
  }

  /**
   * Before a poll that waits in a gang takes another task: `stay` when the node could not take
   * `task` now anyway (it keeps its membership); otherwise it leaves its gangs first, so that no
   * gang is bound to it after it took other work. Leaving and binding both write the gang record
   * under a version condition, so either the leave came first (nothing will be bound) or the bind
   * did, and its task is handed out here instead.
   */
  private async leaveGangsFor(
    holding: Holding,
    task: TaskRecord,
    ctx: PollContext,
  ): Promise<Assignment | 'stay' | undefined> {
    const now = this.clock.now();
    if (task.deadline !== undefined && task.deadline <= now) return 'stay';
    if (!attestationFits(task.requirements, holding.node.attestation, now)) return 'stay';
    if ((await this.roomFor(holding, task.requirements)) === undefined) return 'stay';
    const jobs = [...ctx.joined];
    await this.leaveGangs(holding.node.id, ctx);
    Object.assign(holding, await this.readHolding(holding.node.id));
    for (const jobId of jobs) {
      const assignment = await this.collectGang(holding, jobId, ctx);
      if (assignment !== undefined) return assignment;
    }
    return undefined;
  }

  /** Takes this node out of the gangs it joined (best effort: a member whose poll ended is ignored anyway). */
  private async leaveGangs(nodeId: string, ctx: PollContext): Promise<void> {
    for (const jobId of ctx.joined) {
      for (let round = 0; round < giveBackRounds; round++) {
        const gang = await this.store.get<GangRecord>(gangKey(jobId));
        // Only this poll's place: another poll of the node may have taken it over (its own ended soon).
        if (gang === undefined || !isMember(gang.data, nodeId, ctx.poll)) break;
        const members = gang.data.members.filter((m) => !(m.nodeId === nodeId && m.poll === ctx.poll));
        try {
          await this.store.transact([gangWrite(jobId, members, gang, this.clock.now() + 60_000)]);
          break;
        } catch (error) {
          if (!(error instanceof ConditionFailedError)) throw error;
        }
      }
    }
    ctx.joined.clear();
  }

  /**
   * Hands a won claim back at once when its assignment cannot be built: the attempt ends, the task
   * is queued again (or fails, past its budget) and the node's `held` entry goes, instead of both
   * waiting for the lease to run out. A key that does not open is the job's own fault and costs an
   * attempt, so a job with a broken key fails after its budget instead of looping; anything else
   * (a throttle, an outage) says nothing about the job and is a release, free up to the allowance
   * (task-machine.ts `releaseAllowance`). When the items keep moving the give-back stops: the
   * lease runs out and the reaper requeues the task, and the next poll prunes the stale entry.
   */
  private async giveBack(holding: Holding, claimed: TaskRecord, cause: unknown, countsAgainstBudget: boolean) {
    const message = `the control plane could not open the job's key: ${describe(cause)}`;
    const owns = (t: TaskRecord) =>
      (t.state === 'assigned' || t.state === 'running') &&
      t.nodeId === holding.node.id &&
      t.attempt === claimed.attempt;
    for (let round = 0; round < giveBackRounds; round++) {
      const task = await this.store.get<TaskRecord>(taskKey(claimed.jobId, claimed.index));
      const node = await this.store.get<NodeRecord>(nodeKey(holding.node.id));
      const writes: Write[] = [];
      let requeued: TaskRecord | undefined;
      if (task !== undefined && owns(task.data)) {
        requeued = recordFailure(task.data, countsAgainstBudget ? 'error' : 'released', message, this.clock.now());
        writes.push(...putTask(requeued, task.version));
      }
      const held = node?.data.held ?? [];
      const kept = held.filter((h) => !(h.taskId === claimed.id && h.attempt === claimed.attempt));
      if (node !== undefined && kept.length !== held.length)
        writes.push(putNode({ ...node.data, held: kept }, node.version));
      if (writes.length === 0) return;
      try {
        await this.store.transact(writes);
      } catch (error) {
        if (error instanceof ConditionFailedError) continue;
        this.log({ msg: 'give-back failed; the lease will run out', taskId: claimed.id, error: describe(error) });
        return;
      }
      if (node !== undefined && kept.length !== held.length) {
        Object.assign(holding, { node: { ...node.data, held: kept }, version: node.version + 1, held: kept });
      }
      this.log({ msg: 'claim given back', nodeId: holding.node.id, taskId: claimed.id, error: describe(cause) });
      if (requeued?.state === 'queued') await this.reschedule(requeued);
      return;
    }
    this.log({ msg: 'give-back kept conflicting; the lease will run out', taskId: claimed.id });
  }

  /** The requeued task goes back through routing; if the message is lost, the reaper routes it. */
  private async reschedule(task: TaskRecord): Promise<void> {
    try {
      await requestScheduling(this.queue, task.jobId);
    } catch (error) {
      this.log({
        msg: 'schedule message not sent; the reaper routes the task',
        taskId: task.id,
        error: describe(error),
      });
    }
  }
}

const ignoreConflict = (error: unknown): void => {
  if (!(error instanceof ConditionFailedError)) throw error;
};

/**
 * The gang record with `members`, written over the version read (`gang`; absent: it must not
 * exist), keeping its hand-outs unless `bound` replaces them; it expires (TTL) an hour after the
 * last member's poll ends.
 */
const gangWrite = (
  jobId: string,
  members: GangMember[],
  gang: StoredItem<GangRecord> | undefined,
  until: number,
  bound: GangHandOut[] | undefined = gang?.data.bound,
): Write => ({
  kind: 'put',
  key: gangKey(jobId),
  data: { jobId, members, ...(bound === undefined || bound.length === 0 ? {} : { bound }) } satisfies GangRecord,
  expiresAt: Math.floor(Math.max(until, ...members.map((m) => m.until)) / 1000) + 3600,
  expectVersion: gang?.version ?? 0,
});

const taskOf = (payload: unknown): string | undefined =>
  typeof payload === 'object' && payload !== null && 'taskId' in payload ? String(payload.taskId) : undefined;

const describe = (error: unknown): string =>
  error instanceof Error ? `${error.name}: ${error.message}` : String(error);

const notAvailable = (taskId: string, why: string) =>
  new ConflictError('task_not_available', `task ${taskId} cannot be claimed: ${why}`, { taskId });
