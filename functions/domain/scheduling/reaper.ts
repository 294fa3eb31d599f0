import type { Clock } from '../../ports/clock.js';
import type { Queue } from '../../ports/queue.js';
import { ConditionFailedError, type QueryOptions, type Store, type StoredItem, type Write } from '../../ports/store.js';
import type { WorkHints } from '../../ports/work-hints.js';
import { isoTime, sortableTime, updateWithRetry } from '../records.js';
import type { NodeRegistry } from '../resource/node-registry.js';
import type { PoolSummaries, PoolSummary } from '../resource/pool-summary.js';
import { allShardPks } from '../shards.js';
import { deadlineDuePk, type JobRecord, jobPk, putJob } from './job-record.js';
import { requestScheduling } from './messages.js';
import type { Router } from './router.js';
import { expireLease, stop } from './task-machine.js';
import { isTerminal, leaseDuePk, poolPk, putTask, type TaskRecord, taskKey, verifyDuePk } from './task-record.js';
import type { Verifier } from './verifier.js';

export interface ReaperSettings {
  leaseMs: number;
  /** When this control plane started: leases get one full lease period after a restart. */
  bootedAt: number;
  /** Unrouted tasks older than this are routed by the reaper (their schedule message was lost or found no node). */
  unroutedAfterMs: number;
  /** Page size of every sweep: each partition gets one page a tick, more while pages come back full and time is left. */
  batch: number;
  /** Queued tasks whose last hint is older than this are hinted again; `Infinity` turns it off. */
  hintRedriveMs: number;
  /** Time one tick may spend on pages beyond each partition's first (default {@link defaultTickBudgetMs}). */
  tickBudgetMs?: number;
  /** The longest run of work between two yields to the event loop (default {@link defaultSliceMs}). */
  sliceMs?: number;
}

/** A backlog drains at whatever rate the store allows within this much of each tick. */
export const defaultTickBudgetMs = 2000;
/** Requests and timers of the same process wait at most about this long for a tick. */
export const defaultSliceMs = 10;

export interface ReapReport {
  leasesExpired: number;
  verified: number;
  routed: number;
  deadlinesEnforced: number;
  /** Work hints published again for tasks that stayed queued in a pool. */
  hintsRedriven: number;
  /** Nodes unseen for the liveness window, taken out of their pools' summaries. */
  nodesExpired: number;
}

/** Where a sweep of one partition stopped, so the next tick resumes past what it already saw. */
type Cursors = Map<string, string>;

/**
 * Re-drives from table state alone whatever a lost message, a dead node or a passed deadline left
 * behind. Runs on a timer (embedded) or a schedule (cloud); every step is a conditional write, so
 * two reapers, or a reaper racing a node's late report, cannot both apply.
 *
 * It holds at any fleet size: every list it reads is a partition it pages through (the sharded
 * due lists, one pool's queue), never the node list; dead pools are found from the pools'
 * summaries (no live node, tasks queued). Each partition gets one page a tick, and more while
 * pages come back full and the tick's time budget lasts, so the work done grows with the backlog;
 * a sweep cut short resumes at its cursor on the next tick, so tasks it cannot act on (yet) at the
 * head of a list never hide those behind them. It yields to the event loop every `sliceMs`, so a
 * big tick never stalls the requests the same process serves.
 *
 * After a restart of the control plane, leases are not expired until one lease period has passed,
 * so agents that kept working through the outage can report before their tasks are taken away.
 */
export class Reaper {
  readonly #cursors: Cursors = new Map();
  /** When the current tick's budget runs out, and when it last yielded (performance clock, ms). */
  #deadline = 0;
  #lastYield = 0;

  constructor(
    private readonly store: Store,
    private readonly queue: Queue,
    private readonly registry: NodeRegistry,
    private readonly router: Router,
    private readonly verifier: Verifier,
    private readonly hints: WorkHints,
    private readonly clock: Clock,
    private readonly summaries: Pick<PoolSummaries, 'all' | 'invalidate'>,
    private readonly settings: ReaperSettings,
  ) {}

  async tick(): Promise<ReapReport> {
    const started = performance.now();
    this.#deadline = started + (this.settings.tickBudgetMs ?? defaultTickBudgetMs);
    this.#lastYield = started;
    const nodesExpired = await this.expireNodes();
    const leasesExpired = await this.expireLeases();
    const verified = await this.verifyOverdue();
    const deadlinesEnforced = await this.enforceDeadlines();
    const routed = (await this.rerouteDeadPools()) + (await this.routeUnrouted());
    const hintsRedriven = await this.redriveHints();
    return { leasesExpired, verified, routed, deadlinesEnforced, hintsRedriven, nodesExpired };
  }

  /** Whether the tick may read another page of a partition beyond its first. */
  #timeLeft(): boolean {
    return performance.now() < this.#deadline;
  }

  /** Lets timers and requests run when this tick has worked for `sliceMs` since it last did. */
  async #pace(): Promise<void> {
    const now = performance.now();
    if (now - this.#lastYield < (this.settings.sliceMs ?? defaultSliceMs)) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.#lastYield = performance.now();
  }

  /**
   * Pages through one partition from where the last tick's sweep of it stopped, handing each item
   * to `handle`: one page, then more while they come back full and time is left. A sweep that
   * reaches the end starts from the head next time.
   * @returns whether the sweep reached the end of the partition.
   */
  private async sweep<T>(
    query: Omit<QueryOptions, 'cursor' | 'limit'>,
    handle: (item: StoredItem<T>) => Promise<void>,
  ): Promise<boolean> {
    const id = JSON.stringify([query.index, query.pk, query.skPrefix]);
    for (let first = true; first || this.#timeLeft(); first = false) {
      await this.#pace();
      const cursor = this.#cursors.get(id);
      const page = await this.store.query<T>({
        ...query,
        limit: this.settings.batch,
        ...(cursor === undefined ? {} : { cursor }),
      });
      for (const item of page.items) {
        await this.#pace();
        await handle(item);
      }
      if (page.cursor === undefined) {
        this.#cursors.delete(id);
        return true;
      }
      this.#cursors.set(id, page.cursor);
    }
    return false;
  }

  /** Sweeps every shard of a due list, items due before now. */
  private async sweepDue<T>(prefix: string, handle: (item: StoredItem<T>) => Promise<void>): Promise<void> {
    for (const pk of allShardPks(prefix)) {
      await this.sweep<T>({ index: 'byDue', pk, skBefore: sortableTime(this.clock.now()) }, handle);
    }
  }

  /** Dead nodes leave their pools' summaries (presence.ts), page after page while time is left. */
  private async expireNodes(): Promise<number> {
    let expired = 0;
    for (let first = true; first || this.#timeLeft(); first = false) {
      await this.#pace();
      const swept = await this.registry.sweepDead(this.clock.now(), this.settings.batch);
      expired += swept;
      if (swept < this.settings.batch) break;
    }
    if (expired > 0) {
      this.summaries.invalidate();
      this.router.invalidate();
    }
    return expired;
  }

  private async expireLeases(): Promise<number> {
    if (this.clock.now() < this.settings.bootedAt + this.settings.leaseMs) return 0;
    let expired = 0;
    await this.sweepDue<TaskRecord>(leaseDuePk, async (item) => {
      const task = await updateWithRetry<TaskRecord, TaskRecord>(
        this.store,
        taskKey(item.data.jobId, item.data.index),
        (current) => {
          if (current === undefined) return undefined;
          const now = this.clock.now();
          const t = current.data;
          if ((t.state !== 'assigned' && t.state !== 'running') || (t.leaseExpiresAt ?? 0) > now) return undefined;
          const next = expireLease(t, now);
          return { writes: putTask(next, current.version), result: next };
        },
      );
      if (task === undefined) return;
      expired++;
      const lostBy = item.data.nodeId;
      if (lostBy !== undefined) await this.registry.bumpStats(lostBy, 'leasesLost');
      await this.verifier.performance.recordAttempt(task, task.attempt);
      if (task.state === 'queued') await requestScheduling(this.queue, task.jobId);
    });
    return expired;
  }

  private async verifyOverdue(): Promise<number> {
    let verified = 0;
    await this.sweepDue<TaskRecord>(verifyDuePk, async (item) => {
      const outcome = await this.verifier.verify({ taskId: item.data.id, attempt: item.data.attempt });
      if (outcome !== 'stale') verified++;
    });
    return verified;
  }

  private async enforceDeadlines(): Promise<number> {
    let enforced = 0;
    const enforce = async (item: StoredItem<JobRecord>) => {
      if (await this.enforceDeadline(item.data.id)) enforced++;
    };
    await this.sweepDue<JobRecord>(deadlineDuePk, enforce);
    // Jobs submitted before the deadline list was sharded sit in its one old partition.
    await this.sweep<JobRecord>(
      { index: 'byDue', pk: deadlineDuePk, skBefore: sortableTime(this.clock.now()) },
      enforce,
    );
    return enforced;
  }

  /** Fails every unfinished task of a job past its deadline, and takes the job off the due list. */
  private async enforceDeadline(jobId: string): Promise<boolean> {
    for (let round = 0; round < 8; round++) {
      const page = await this.store.query({ pk: jobPk(jobId), limit: 1000 });
      const job = page.items.find((i) => i.sk === 'JOB') as StoredItem<JobRecord> | undefined;
      if (job === undefined || job.data.deadlineEnforced) return false;
      const now = this.clock.now();
      const writes: Write[] = [putJob({ ...job.data, deadlineEnforced: true }, job.version)];
      for (const item of page.items as StoredItem<TaskRecord>[]) {
        if (!item.sk.startsWith('TASK#') || isTerminal(item.data.state)) continue;
        const failed = stop(
          item.data,
          now,
          'failed',
          'deadline_exceeded',
          `the job deadline passed at ${new Date(job.data.deadline ?? now).toISOString()}`,
        );
        writes.push(...putTask(failed, item.version));
      }
      try {
        await this.store.transact(writes);
        return true;
      } catch (error) {
        if (!(error instanceof ConditionFailedError)) throw error;
      }
    }
    return false;
  }

  /**
   * Unrouted tasks, through the router's own resumable sweep (it skips tasks it tried while the
   * fleet's capacity stayed the same): one budget of `batch` a tick, more while each comes back
   * fully used and time is left.
   */
  private async routeUnrouted(): Promise<number> {
    const before = this.clock.now() - this.settings.unroutedAfterMs;
    let routed = 0;
    for (let first = true; first || this.#timeLeft(); first = false) {
      await this.#pace();
      const now = await this.router.routeUnrouted(before, this.settings.batch);
      routed += now;
      if (now < this.settings.batch) break;
    }
    return routed;
  }

  /**
   * Hints are best effort: a task queued in a live pool whose last hint (or queuing) is older than
   * `hintRedriveMs` is hinted again. Only pools whose summary shows live nodes and queued tasks are
   * read, each through a resumable sweep of its queue; `hintedAt` is a versioned write before the
   * publish, so two reapers do not both hint, and a task is hinted at most once per period. A
   * publish that fails waits for the next period.
   */
  private async redriveHints(): Promise<number> {
    const { hintRedriveMs } = this.settings;
    if (!Number.isFinite(hintRedriveMs)) return 0;
    let hinted = 0;
    for (const summary of await this.summaries.all()) {
      if (summary.liveNodes <= 0 || summary.queued <= 0) continue;
      const pool = summary.pool;
      await this.sweep<TaskRecord>({ index: 'byPool', pk: poolPk(pool) }, async (item) => {
        const now = this.clock.now();
        const task = item.data;
        if (task.state !== 'queued' || task.pool !== pool) return;
        if (now - Math.max(task.hintedAt ?? 0, task.queuedAt) <= hintRedriveMs) return;
        const next: TaskRecord = { ...task, hintedAt: now };
        try {
          await this.store.transact(putTask(next, item.version));
        } catch (error) {
          if (error instanceof ConditionFailedError) return; // claimed or moved meanwhile
          throw error;
        }
        try {
          await this.hints.publish({ taskId: task.id, pool, queuedAt: isoTime(task.queuedAt) });
          hinted++;
        } catch {
          // best effort: the next period tries again
        }
      });
    }
    return hinted;
  }

  /**
   * Tasks waiting in a pool whose nodes all went away (its summary: no live node, tasks queued)
   * become unrouted, for the router to place afresh. No node list is read, so this holds at any
   * fleet size.
   */
  private async rerouteDeadPools(): Promise<number> {
    const dead = (await this.summaries.all()).filter((s: PoolSummary) => s.liveNodes <= 0 && s.queued > 0);
    let moved = 0;
    for (const { pool } of dead) {
      await this.sweep<TaskRecord>({ index: 'byPool', pk: poolPk(pool) }, async (item) => {
        if (item.data.state !== 'queued' || item.data.pool !== pool) return;
        const { pool: _dead, ...rest } = item.data;
        try {
          await this.store.transact(putTask({ ...rest, updatedAt: this.clock.now() }, item.version));
          moved++;
        } catch (error) {
          if (!(error instanceof ConditionFailedError)) throw error;
        }
      });
    }
    if (moved > 0) {
      this.summaries.invalidate();
      this.router.invalidate();
    }
    return moved;
  }
}
