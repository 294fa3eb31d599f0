import type { Clock } from '../../ports/clock.js';
import type { Queue } from '../../ports/queue.js';
import { ConditionFailedError, type Store, type StoredItem, type Write } from '../../ports/store.js';
import type { WorkHints } from '../../ports/work-hints.js';
import { isoTime, sortableTime, updateWithRetry } from '../records.js';
import { isLive } from '../resource/node-record.js';
import type { NodeRegistry } from '../resource/node-registry.js';
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
  /** Items handled per kind and tick. */
  batch: number;
  /** Queued tasks whose last hint is older than this are hinted again; `Infinity` turns it off. */
  hintRedriveMs: number;
}

export interface ReapReport {
  leasesExpired: number;
  verified: number;
  routed: number;
  deadlinesEnforced: number;
  /** Work hints published again for tasks that stayed queued in a pool. */
  hintsRedriven: number;
}

/**
 * Re-drives from table state alone whatever a lost message, a dead node or a passed deadline left
 * behind. Runs on a timer (embedded) or a schedule (cloud); every step is a conditional write, so
 * two reapers, or a reaper racing a node's late report, cannot both apply.
 *
 * After a restart of the control plane, leases are not expired until one lease period has passed,
 * so agents that kept working through the outage can report before their tasks are taken away.
 */
export class Reaper {
  constructor(
    private readonly store: Store,
    private readonly queue: Queue,
    private readonly registry: NodeRegistry,
    private readonly router: Router,
    private readonly verifier: Verifier,
    private readonly hints: WorkHints,
    private readonly clock: Clock,
    private readonly settings: ReaperSettings,
  ) {}

  async tick(): Promise<ReapReport> {
    return {
      leasesExpired: await this.expireLeases(),
      verified: await this.verifyOverdue(),
      deadlinesEnforced: await this.enforceDeadlines(),
      routed: (await this.rerouteDeadPools()) + (await this.routeUnrouted()),
      hintsRedriven: await this.redriveHints(),
    };
  }

  private async due<T>(pk: string): Promise<StoredItem<T>[]> {
    const page = await this.store.query<T>({
      index: 'byDue',
      pk,
      skBefore: sortableTime(this.clock.now()),
      limit: this.settings.batch,
    });
    return page.items;
  }

  private async expireLeases(): Promise<number> {
    if (this.clock.now() < this.settings.bootedAt + this.settings.leaseMs) return 0;
    let expired = 0;
    for (const item of await this.due<TaskRecord>(leaseDuePk)) {
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
      if (task === undefined) continue;
      expired++;
      const lostBy = item.data.nodeId;
      if (lostBy !== undefined) await this.registry.bumpStats(lostBy, 'leasesLost');
      if (task.state === 'queued') await requestScheduling(this.queue, task.jobId);
    }
    return expired;
  }

  private async verifyOverdue(): Promise<number> {
    let verified = 0;
    for (const item of await this.due<TaskRecord>(verifyDuePk)) {
      const outcome = await this.verifier.verify({ taskId: item.data.id, attempt: item.data.attempt });
      if (outcome !== 'stale') verified++;
    }
    return verified;
  }

  private async enforceDeadlines(): Promise<number> {
    let enforced = 0;
    for (const item of await this.due<JobRecord>(deadlineDuePk)) {
      if (await this.enforceDeadline(item.data.id)) enforced++;
    }
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

  private async routeUnrouted(): Promise<number> {
    const before = this.clock.now() - this.settings.unroutedAfterMs;
    return this.router.routeUnrouted(before, this.settings.batch);
  }

  /**
   * Hints are best effort: a task queued in a live pool whose last hint (or queuing) is older than
   * `hintRedriveMs` is hinted again. The byPool index yields the oldest first; `hintedAt` is a
   * versioned write before the publish, so two reapers do not both hint, and a task is hinted at
   * most once per period. A publish that fails waits for the next period.
   */
  private async redriveHints(): Promise<number> {
    const { hintRedriveMs, batch } = this.settings;
    if (!Number.isFinite(hintRedriveMs)) return 0;
    const now = this.clock.now();
    const pools = new Set<string>();
    for (const node of (await this.registry.list(1000)).nodes) {
      if (!isLive(node, now, this.registry.settings.livenessMs)) continue;
      for (const pool of node.pools) pools.add(pool);
    }
    let hinted = 0;
    for (const pool of pools) {
      let cursor: string | undefined;
      // A few pages at most: tasks hinted recently stay at the front of the index.
      for (let page = 0; page < 10 && hinted < batch; page++) {
        const result = await this.store.query<TaskRecord>({
          index: 'byPool',
          pk: poolPk(pool),
          skBefore: sortableTime(now - hintRedriveMs),
          limit: batch,
          ...(cursor === undefined ? {} : { cursor }),
        });
        for (const item of result.items) {
          if (hinted >= batch) break;
          const task = item.data;
          if (task.state !== 'queued' || task.pool !== pool) continue;
          if (now - Math.max(task.hintedAt ?? 0, task.queuedAt) <= hintRedriveMs) continue;
          const next: TaskRecord = { ...task, hintedAt: now };
          try {
            await this.store.transact(putTask(next, item.version));
          } catch (error) {
            if (error instanceof ConditionFailedError) continue; // claimed or moved meanwhile
            throw error;
          }
          try {
            await this.hints.publish({ taskId: task.id, pool, queuedAt: isoTime(task.queuedAt) });
            hinted++;
          } catch {
            // best effort: the next period tries again
          }
        }
        cursor = result.cursor;
        if (cursor === undefined) break;
      }
    }
    return hinted;
  }

  /** Tasks waiting in a pool whose nodes all went away are routed afresh. */
  private async rerouteDeadPools(): Promise<number> {
    const now = this.clock.now();
    const all = await this.registry.list(1000);
    const livePools = new Set<string>();
    const knownPools = new Set<string>();
    for (const node of all.nodes) {
      for (const pool of node.pools) {
        knownPools.add(pool);
        if (isLive(node, now, this.registry.settings.livenessMs)) livePools.add(pool);
      }
    }
    let moved = 0;
    for (const pool of knownPools) {
      if (livePools.has(pool)) continue;
      const page = await this.store.query<TaskRecord>({
        index: 'byPool',
        pk: poolPk(pool),
        limit: this.settings.batch,
      });
      for (const item of page.items) {
        const { pool: _dead, ...rest } = item.data;
        try {
          await this.store.transact(putTask({ ...rest, updatedAt: now }, item.version));
          moved++;
        } catch (error) {
          if (!(error instanceof ConditionFailedError)) throw error;
        }
      }
    }
    this.router.invalidate();
    return moved;
  }
}
