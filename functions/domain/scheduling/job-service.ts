import {
  type JobSpec,
  type JobStatus,
  type JobView,
  type JobWithTasks,
  limits,
  terminalJobStatuses,
  terminalTaskStates,
  verificationView,
} from '../../../protocol/index.js';
import type { Clock } from '../../ports/clock.js';
import type { Keys } from '../../ports/keys.js';
import type { Queue } from '../../ports/queue.js';
import { ConditionFailedError, type Store, type StoredItem, type Write } from '../../ports/store.js';
import { ConflictError, ContentionError, InvalidRequestError, NotFoundError } from '../errors.js';
import { decodeListCursor, encodeListCursor, malformedCursor } from '../list-cursor.js';
import { isoTime } from '../records.js';
import { unknownGpuModels } from '../resource/fit.js';
import { acceleratorTable } from '../resource/pools.js';
import { sameRequest, sealJob } from '../security/job-secrets.js';
import type { Quotas } from '../security/quotas.js';
import { newJobId } from './job-id.js';
import {
  type IdempotencyRecord,
  idempotencyKey,
  idempotencyTtlSeconds,
  type JobCounterRecord,
  type JobRecord,
  jobCounterShards,
  jobKey,
  jobOwnerSk,
  jobPk,
  maxJobCounterShards,
  ownerPk,
  putJob,
  putJobCounters,
  sealedValue,
} from './job-record.js';
import { countTasks, finishedAt, jobStatus } from './job-status.js';
import { requestScheduling } from './messages.js';
import { workloadOf } from './performance.js';
import { stop } from './task-machine.js';
import {
  isTerminal,
  type JobTaskCounters,
  jobTaskCounters,
  newTaskRecord,
  putTask,
  type TaskRecord,
  toTaskView,
} from './task-record.js';

export interface SubmitOutcome {
  job: JobWithTasks;
  /** False when an idempotent replay returned the job that the first request created. */
  created: boolean;
}

/** A job with the tasks read in the same query. */
export interface LoadedJob {
  job: StoredItem<JobRecord>;
  tasks: StoredItem<TaskRecord>[];
}

/**
 * Submission, reading and cancellation of jobs. A job and all its tasks (and the idempotency
 * record) are written in one conditional transaction: either the whole job is accepted or none
 * of it is.
 */
export class JobService {
  constructor(
    private readonly store: Store,
    private readonly queue: Queue,
    private readonly keys: Keys,
    private readonly clock: Clock,
    /** Per-tenant quotas checked at submission; none when absent. */
    private readonly quotas?: Quotas,
  ) {}

  async submit(owner: string, spec: JobSpec, idempotency?: string): Promise<SubmitOutcome> {
    refuseUnknownGpuModels(spec);
    if (spec.gang === true && spec.tasks > limits.maxGangTasks) {
      throw new InvalidRequestError(
        'gang_too_large',
        `a gang job starts at most ${limits.maxGangTasks} tasks together, not ${spec.tasks}`,
      );
    }
    const now = this.clock.now();
    const deadline = spec.deadline === undefined ? undefined : Date.parse(spec.deadline);
    if (deadline !== undefined && deadline <= now) {
      throw new InvalidRequestError('deadline_passed', `the deadline ${spec.deadline} is already past`);
    }
    if (idempotency !== undefined) {
      const replay = await this.replay(owner, idempotency, spec);
      if (replay !== undefined) return { job: replay, created: false };
    }

    const id = newJobId(now);
    const secrets = await sealJob(this.keys, id, spec, idempotency !== undefined);
    const job: JobRecord = {
      id,
      owner,
      spec: { ...spec, env: Object.fromEntries(Object.keys(spec.env).map((k) => [k, sealedValue])) },
      ...(secrets?.sealedEnv === undefined ? {} : { sealedEnv: secrets.sealedEnv }),
      ...(secrets === undefined ? {} : { wrappedKey: secrets.wrappedKey }),
      createdAt: now,
      ...(deadline === undefined ? {} : { deadline }),
    };
    const requirements = {
      gpus: spec.resources.gpus,
      ...(spec.resources.cpuCores === undefined ? {} : { cpuCores: spec.resources.cpuCores }),
      ...(spec.resources.memoryMiB === undefined ? {} : { memoryMiB: spec.resources.memoryMiB }),
      ...(spec.regions === undefined ? {} : { regions: spec.regions }),
      needsContainer: spec.image !== undefined,
      ...(spec.minAttestation === undefined ? {} : { minAttestation: spec.minAttestation }),
    };
    // Priority and owner ride on each task: dispatch orders a pool's queue by them (fair share).
    const tasks = Array.from({ length: spec.tasks }, (_, index) => ({
      ...newTaskRecord(id, index, spec.tasks, spec.retries + 1, requirements, spec.timeoutSeconds, deadline, now),
      ...(spec.priority === undefined ? {} : { priority: spec.priority }),
      ...(spec.gang === true && spec.tasks > 1 ? { gangSize: spec.tasks } : {}),
      workload: workloadOf(spec),
      tenant: owner,
    }));
    const writes: Write[] = [putJob(job, 0), ...putJobCounters(job), ...tasks.flatMap((t) => putTask(t, 0))];
    if (idempotency !== undefined && secrets !== undefined) {
      const record: IdempotencyRecord = { jobId: id, requestMac: secrets.requestMac };
      writes.push({
        kind: 'put',
        key: idempotencyKey(owner, idempotency),
        data: record,
        expiresAt: Math.floor(now / 1000) + idempotencyTtlSeconds,
        expectVersion: 0,
      });
    }
    // The tenant's usage goes into the same transaction: over a quota, nothing is written. Another
    // submission of the tenant that wrote the usage first fails only that write: reserve again.
    for (let attempt = 1; ; attempt++) {
      const usage = await this.quotas?.reserve(owner, id, spec, (jobId) => this.openTasks(jobId));
      try {
        await this.store.transact(usage === undefined ? writes : [...writes, usage]);
        break;
      } catch (error) {
        const usageOnly =
          error instanceof ConditionFailedError && error.failed.length === 1 && error.failed[0] === writes.length;
        if (usageOnly && attempt < 8) continue;
        if (usageOnly) throw new ContentionError('the tenant usage item stayed contended; retry', { cause: error });
        // Another request with the same key won the race: answer as its replay.
        if (error instanceof ConditionFailedError && idempotency !== undefined) {
          const replay = await this.replay(owner, idempotency, spec);
          if (replay !== undefined) return { job: replay, created: false };
        }
        throw error;
      }
    }
    // The message only speeds routing up: if it is lost, the reaper routes unrouted tasks anyway.
    await requestScheduling(this.queue, id);
    return { job: this.view(job, tasks), created: true };
  }

  private async replay(owner: string, key: string, spec: JobSpec): Promise<JobWithTasks | undefined> {
    const seen = await this.store.get<IdempotencyRecord>(idempotencyKey(owner, key));
    if (seen === undefined) return undefined;
    // The MAC is keyed with the first job's data key: unwrapped here, on a replay only.
    const first = await this.store.get<JobRecord>(jobKey(seen.data.jobId));
    if (first === undefined || !(await sameRequest(this.keys, first.data, spec, seen.data.requestMac))) {
      throw new ConflictError(
        'idempotency_key_reused',
        `Idempotency-Key ${key} was already used for another request (job ${seen.data.jobId})`,
        { jobId: seen.data.jobId },
      );
    }
    return this.get(owner, seen.data.jobId);
  }

  /** A job's unfinished tasks, for quota reconciliation; `undefined` when the job is gone. */
  private async openTasks(jobId: string): Promise<number | undefined> {
    const loaded = await this.load(jobId);
    return loaded?.tasks.filter((t) => !isTerminal(t.data.state)).length;
  }

  async load(jobId: string): Promise<LoadedJob | undefined> {
    const items: StoredItem[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.store.query({
        pk: jobPk(jobId),
        limit: 1000,
        ...(cursor === undefined ? {} : { cursor }),
      });
      items.push(...page.items);
      cursor = page.cursor;
    } while (cursor !== undefined);
    const job = items.find((i) => i.sk === 'JOB') as StoredItem<JobRecord> | undefined;
    if (job === undefined) return undefined;
    const tasks = items.filter((i) => i.sk.startsWith('TASK#')) as StoredItem<TaskRecord>[];
    return { job, tasks };
  }

  async get(owner: string, jobId: string): Promise<JobWithTasks> {
    const loaded = await this.load(jobId);
    if (loaded === undefined || loaded.job.data.owner !== owner)
      throw new NotFoundError('job_not_found', `no job ${jobId}`);
    return this.view(
      loaded.job.data,
      loaded.tasks.map((t) => t.data),
    );
  }

  /**
   * Newest first, one query per page: each job's task counters (task-record.ts `JobTaskCounters`)
   * are index entries of the owner's list right above the job item (job-record.ts), so the page
   * that reads a job reads its counters and no job's tasks; only a job stored before the counters
   * is loaded whole. The query asks for enough entries to hold `limit` whole jobs; a job cut off at
   * the end of what came back is left to the next page, whose cursor is the last listed job's
   * sort key (pages thus start on a job's first entry). A listed job's `updatedAt` is when a task
   * last changed state (reading the job also counts progress reports). The status filter applies
   * to each page, so a filtered page may be short (even empty, with a cursor); the cursor carries
   * the filter, so it resumes only a list with the same one.
   * @throws InvalidRequestError `invalid_cursor` for a cursor not made by this owner's list with this status filter.
   */
  async list(
    owner: string,
    limit: number,
    cursor?: string,
    status?: string,
  ): Promise<{ jobs: JobView[]; cursor?: string }> {
    const pk = ownerPk(owner);
    const listed: { job: JobRecord; counters: Record<string, unknown>[] }[] = [];
    let before = cursor === undefined ? undefined : decodeJobCursor(cursor, pk, status);
    let more = false;
    let group: Record<string, unknown>[] = [];
    // More than one query only when a store page held no whole job (DynamoDB stops at 1 MB).
    for (let storeCursor: string | undefined; ; ) {
      const page = await this.store.query<JobRecord | JobCounterRecord>({
        index: 'byOwner',
        pk,
        descending: true,
        limit: limit * (maxJobCounterShards + 1),
        ...(before === undefined ? {} : { skBefore: before }),
        ...(storeCursor === undefined ? {} : { cursor: storeCursor }),
      });
      // Descending, a job's counters come right before it: the job item closes its group.
      for (const item of page.items) {
        if (item.sk !== 'JOB') {
          group.push(item.data as unknown as Record<string, unknown>);
          continue;
        }
        if (listed.length === limit) {
          more = true;
          break;
        }
        const job = item.data as JobRecord;
        listed.push({ job, counters: group.filter((c) => c.jobId === job.id) });
        group = [];
      }
      if (page.cursor !== undefined) more = true;
      if (listed.length > 0 || page.cursor === undefined) break;
      storeCursor = page.cursor;
    }
    const views = await Promise.all(
      listed.map(async ({ job, counters }): Promise<JobView | undefined> => {
        const counted =
          counters.length === jobCounterShards(job.spec.tasks) ? jobTaskCounters(counters, job.spec.tasks) : undefined;
        if (counted !== undefined) return this.counted(job, counted);
        const loaded = await this.load(job.id);
        return loaded === undefined
          ? undefined
          : this.summary(
              loaded.job.data,
              loaded.tasks.map((t) => t.data),
            );
      }),
    );
    const jobs = views
      .filter((j): j is JobView => j !== undefined)
      .filter((j) => status === undefined || j.status === status);
    const last = listed.at(-1)?.job;
    before = last === undefined ? undefined : jobOwnerSk(last);
    return {
      jobs,
      ...(more && before !== undefined ? { cursor: encodeListCursor('jobs', pk, status, [before]) } : {}),
    };
  }

  /** A job's view from its counters, as {@link summary} derives it from its tasks. */
  private counted(job: JobRecord, counters: JobTaskCounters): JobView {
    const { counts, started, changedAt } = counters;
    const total = job.spec.tasks;
    const ended = terminalTaskStates.reduce((sum, state) => sum + counts[state], 0);
    let status: JobStatus;
    if (ended === total) {
      status = counts.verified === total ? 'succeeded' : counts.failed > 0 ? 'failed' : 'cancelled';
    } else if (job.cancelledAt !== undefined) status = 'cancelled';
    else status = started > 0 ? 'running' : 'queued';
    const updatedAt = Math.max(job.createdAt, job.cancelledAt ?? 0, changedAt ?? 0);
    return {
      id: job.id,
      status,
      spec: { ...job.spec, verification: verificationView(job.spec.verification) },
      taskCounts: counts,
      createdAt: isoTime(job.createdAt),
      updatedAt: isoTime(updatedAt),
      ...(ended === total && changedAt !== undefined ? { finishedAt: isoTime(changedAt) } : {}),
    };
  }

  /** Cancels every task that has not finished; running tasks are stopped at their next heartbeat. */
  async cancel(owner: string, jobId: string): Promise<JobWithTasks> {
    for (let round = 0; round < 8; round++) {
      const loaded = await this.load(jobId);
      if (loaded === undefined || loaded.job.data.owner !== owner)
        throw new NotFoundError('job_not_found', `no job ${jobId}`);
      const status = jobStatus(
        loaded.job.data,
        loaded.tasks.map((t) => t.data),
      );
      if (terminalJobStatuses.includes(status)) {
        throw new ConflictError('job_finished', `job ${jobId} already ${status}`, { status });
      }
      const now = this.clock.now();
      const job: JobRecord = { ...loaded.job.data, cancelledAt: now };
      const writes: Write[] = [putJob(job, loaded.job.version)];
      const tasks = loaded.tasks.map((item) => {
        if (isTerminal(item.data.state)) return item.data;
        const cancelled = stop(item.data, now, 'cancelled', 'cancelled', 'the job was cancelled by its owner');
        writes.push(...putTask(cancelled, item.version));
        return cancelled;
      });
      try {
        await this.store.transact(writes);
        return this.view(job, tasks);
      } catch (error) {
        if (!(error instanceof ConditionFailedError)) throw error;
      }
    }
    throw new ContentionError(`job ${jobId} kept changing while being cancelled`);
  }

  view(job: JobRecord, tasks: readonly TaskRecord[]): JobWithTasks {
    return { ...this.summary(job, tasks), tasks: [...tasks].sort((a, b) => a.index - b.index).map(toTaskView) };
  }

  summary(job: JobRecord, tasks: readonly TaskRecord[]): JobView {
    const ended = finishedAt(tasks);
    const updatedAt = Math.max(job.createdAt, job.cancelledAt ?? 0, ...tasks.map((t) => t.updatedAt));
    return {
      id: job.id,
      status: jobStatus(job, tasks),
      spec: { ...job.spec, verification: verificationView(job.spec.verification) },
      taskCounts: countTasks(tasks),
      createdAt: isoTime(job.createdAt),
      updatedAt: isoTime(updatedAt),
      ...(ended === undefined ? {} : { finishedAt: isoTime(ended) }),
    };
  }
}

/** The sort key a job list cursor resumes below: the last listed job's. */
function decodeJobCursor(cursor: string, pk: string, status: string | undefined): string {
  const [sk, ...rest] = decodeListCursor(cursor, 'jobs', pk, status);
  if (typeof sk !== 'string' || sk === '' || rest.length > 0) throw malformedCursor(cursor);
  return sk;
}

/** A job whose GPU models no node can ever report would wait forever: refused before anything is written. */
function refuseUnknownGpuModels(spec: JobSpec): void {
  const gpus = spec.resources.gpus;
  const unknown = unknownGpuModels(gpus);
  if (unknown.length === 0) return;
  const accepted = acceleratorTable
    .filter((e) => gpus.vendor === undefined || e.vendor === gpus.vendor)
    .map((e) => e.class);
  const vendor = gpus.vendor === undefined ? '' : ` of vendor ${gpus.vendor}`;
  throw new InvalidRequestError(
    'unknown_gpu_model',
    `GPU model ${unknown.map((m) => `"${m}"`).join(', ')} names no known accelerator class${vendor}; ` +
      `name a class (${accepted.slice(0, 6).join(', ')}, ... in details.accepted) or a model as devices report it (H100, RTX 4090)`,
    { models: unknown, accepted },
  );
}
