import type { JobSpec } from '../../../protocol/index.js';
import type { Clock } from '../../ports/clock.js';
import type { ItemKey, Store, Write } from '../../ports/store.js';
import { DomainError, RateLimitedError } from '../errors.js';

/** Per-tenant quotas, checked at submission. 0 turns a quota off. */
export interface QuotaSettings {
  /** Tasks submitted and not yet finished (verified, failed or cancelled), across all jobs. */
  maxOpenTasks: number;
  /** GPU-hours requested (tasks x GPUs x timeoutSeconds) in any rolling 24 hours. */
  gpuHoursPerDay: number;
}

/**
 * Defaults for a shared deployment: far above one person's interactive use, low enough that one
 * tenant (or one leaked key) cannot fill every queue or reserve the fleet for a week.
 * `maxOpenTasks` also bounds the size of the usage item (one entry per open job).
 */
export const defaultQuotas: QuotaSettings = { maxOpenTasks: 1000, gpuHoursPerDay: 2000 };

/**
 * One item per tenant, written in the submit transaction with the job and its tasks:
 *
 *   pk = QUOTA#<tenant>   sk = USAGE
 *   data = { open: [{ jobId, tasks }], hours: [{ hour, gpuSeconds }] }
 *
 * `hours` holds what was requested per clock hour (epoch ms / 3,600,000) over the last 24: the
 * rolling day is the sum of the buckets younger than 24 h, so it is exact to the hour and the
 * item never holds more than 24 buckets.
 *
 * `open` lists the tenant's jobs with the tasks each had open when last counted. Finishing a
 * task does not touch this item (every task transition would contend on one item per tenant);
 * instead the count is an overestimate that is reconciled lazily: only when a submission would
 * go over the quota are the listed jobs read (one query each, this tenant's open jobs only, never
 * a scan) and their unfinished tasks counted again; finished jobs drop out of the list (and are
 * written back with the next accepted submission). Each instance of the control plane reconciles
 * a tenant at most once per {@link reconcileEveryMs}, so a tenant at its quota cannot make every
 * refused submission re-read its jobs (a refusal writes nothing, so the pause is kept in memory).
 */
interface UsageRecord {
  open: { jobId: string; tasks: number }[];
  hours: { hour: number; gpuSeconds: number }[];
}

const usageKey = (tenant: string): ItemKey => ({ pk: `QUOTA#${tenant}`, sk: 'USAGE' });
const hourMs = 3_600_000;
const dayHours = 24;
/** A tenant's open jobs are re-read at most this often. */
export const reconcileEveryMs = 10_000;

/** Counts a job's unfinished tasks; `undefined` when the job no longer exists. */
export type OpenTaskCounter = (jobId: string) => Promise<number | undefined>;

/** GPU-seconds a job asks for: every task may hold its GPUs until its timeout. */
export const requestedGpuSeconds = (spec: Pick<JobSpec, 'tasks' | 'timeoutSeconds' | 'resources'>): number =>
  spec.tasks * spec.resources.gpus.count * spec.timeoutSeconds;

export class QuotaExceededError extends RateLimitedError {
  override name = 'QuotaExceededError';
}

/**
 * Per-tenant quotas on open tasks and GPU-hours per rolling day. {@link reserve} checks that a job
 * fits and returns the usage write for the submit transaction, so that the job and its usage are
 * written together or not at all; a conflicting write (another submission of the same tenant)
 * fails the transaction, and the submission reserves again.
 */
export class Quotas {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly settings: QuotaSettings,
  ) {}

  /** When this instance last reconciled each tenant's open jobs. */
  private readonly reconciledAt = new Map<string, number>();

  private mayReconcile(tenant: string, now: number): boolean {
    if (now - (this.reconciledAt.get(tenant) ?? Number.NEGATIVE_INFINITY) < reconcileEveryMs) return false;
    if (this.reconciledAt.size >= 10_000) this.reconciledAt.clear();
    this.reconciledAt.set(tenant, now);
    return true;
  }

  /**
   * @returns the write that records the job's usage, or `undefined` when every quota is off.
   * @throws {@link QuotaExceededError} (429 `quota_exceeded`, Retry-After) when the job does not fit now.
   * @throws DomainError 403 `quota_exceeded` when the job alone is larger than a quota: it never fits.
   */
  async reserve(
    tenant: string,
    jobId: string,
    spec: JobSpec,
    openTasksOf: OpenTaskCounter,
  ): Promise<Write | undefined> {
    const { maxOpenTasks, gpuHoursPerDay } = this.settings;
    if (maxOpenTasks <= 0 && gpuHoursPerDay <= 0) return undefined;
    const now = this.clock.now();
    const item = await this.store.get<UsageRecord>(usageKey(tenant));
    let usage: UsageRecord = item?.data ?? { open: [], hours: [] };

    const requested = requestedGpuSeconds(spec);
    const hour = Math.floor(now / hourMs);
    const hours = usage.hours.filter((h) => h.hour > hour - dayHours);
    if (gpuHoursPerDay > 0 && requested > 0) {
      const limit = gpuHoursPerDay * 3600;
      if (requested > limit) {
        throw neverFits('gpuHoursPerDay', `${hoursText(requested)} GPU-hours`, `${gpuHoursPerDay} GPU-hours a day`);
      }
      const used = hours.reduce((sum, h) => sum + h.gpuSeconds, 0);
      if (used + requested > limit) {
        // Buckets age out oldest first; the job fits once enough of them have.
        let freed = 0;
        let retryAt = (hour + 1) * hourMs;
        for (const h of [...hours].sort((a, b) => a.hour - b.hour)) {
          freed += h.gpuSeconds;
          retryAt = (h.hour + dayHours) * hourMs;
          if (used - freed + requested <= limit) break;
        }
        throw new QuotaExceededError(
          'quota_exceeded',
          `GPU-hour quota: this job asks for ${hoursText(requested)} GPU-hours (tasks x GPUs x timeout); ` +
            `${hoursText(used)} of ${gpuHoursPerDay} were requested in the last 24 hours`,
          Math.ceil((retryAt - now) / 1000),
          { quota: 'gpuHoursPerDay', limit: gpuHoursPerDay, used: used / 3600, requested: requested / 3600 },
        );
      }
    }

    if (maxOpenTasks > 0) {
      if (spec.tasks > maxOpenTasks)
        throw neverFits('maxOpenTasks', `${spec.tasks} tasks`, `${maxOpenTasks} open tasks`);
      const open = (u: UsageRecord) => u.open.reduce((sum, j) => sum + j.tasks, 0);
      if (open(usage) + spec.tasks > maxOpenTasks && this.mayReconcile(tenant, now)) {
        usage = { ...usage, open: await reconcile(usage.open, openTasksOf) };
      }
      const used = open(usage);
      if (used + spec.tasks > maxOpenTasks) {
        throw new QuotaExceededError(
          'quota_exceeded',
          `open-task quota: ${used} of ${maxOpenTasks} tasks are unfinished; this job adds ${spec.tasks}. ` +
            'Wait for tasks to finish or cancel jobs',
          Math.ceil(reconcileEveryMs / 1000),
          { quota: 'maxOpenTasks', limit: maxOpenTasks, used, requested: spec.tasks },
        );
      }
    }

    const next: UsageRecord = {
      open: maxOpenTasks > 0 ? [...usage.open, { jobId, tasks: spec.tasks }] : [],
      hours: gpuHoursPerDay > 0 && requested > 0 ? addTo(hours, hour, requested) : gpuHoursPerDay > 0 ? hours : [],
    };
    return { kind: 'put', key: usageKey(tenant), data: next, expectVersion: item?.version ?? 0 };
  }
}

/** Re-counts the listed jobs' unfinished tasks, a few queries at a time; finished jobs drop out. */
async function reconcile(open: UsageRecord['open'], openTasksOf: OpenTaskCounter): Promise<UsageRecord['open']> {
  const counted: UsageRecord['open'] = [];
  for (let i = 0; i < open.length; i += 16) {
    const batch = open.slice(i, i + 16);
    const counts = await Promise.all(batch.map((j) => openTasksOf(j.jobId)));
    batch.forEach((j, k) => {
      const tasks = counts[k] ?? 0;
      if (tasks > 0) counted.push({ jobId: j.jobId, tasks });
    });
  }
  return counted;
}

function addTo(hours: UsageRecord['hours'], hour: number, gpuSeconds: number): UsageRecord['hours'] {
  const current = hours.find((h) => h.hour === hour);
  if (current === undefined) return [...hours, { hour, gpuSeconds }];
  return hours.map((h) => (h.hour === hour ? { hour, gpuSeconds: h.gpuSeconds + gpuSeconds } : h));
}

const hoursText = (gpuSeconds: number): string => String(Math.round((gpuSeconds / 3600) * 100) / 100);

function neverFits(quota: string, asked: string, limit: string): DomainError {
  return new DomainError(
    'forbidden',
    'quota_exceeded',
    `this job asks for ${asked}, more than the tenant's quota of ${limit} allows at all; split it into smaller jobs`,
    { quota },
  );
}

/**
 * Reads quotas written as `name=value` pairs over the defaults: `GPUAI_QUOTAS=maxOpenTasks=200,gpuHoursPerDay=0`
 * (embedded) or `QUOTAS` (Lambda). 0 turns a quota off.
 *
 * @throws Error naming the pair it cannot read.
 */
export function parseQuotas(text: string, base: QuotaSettings = defaultQuotas): QuotaSettings {
  const settings = { ...base };
  for (const pair of text.split(',').map((p) => p.trim())) {
    if (pair === '') continue;
    const match = /^(maxOpenTasks|gpuHoursPerDay)=(\d{1,9})$/.exec(pair);
    if (match?.[1] === undefined) {
      throw new Error(`cannot read "${pair}": expected maxOpenTasks=<n> or gpuHoursPerDay=<n>`);
    }
    settings[match[1] as keyof QuotaSettings] = Number(match[2]);
  }
  return settings;
}
