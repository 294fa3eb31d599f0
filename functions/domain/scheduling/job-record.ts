import type { JobSpec } from '../../../protocol/index.js';
import type { ItemKey, Write } from '../../ports/store.js';
import { sortableTime } from '../records.js';
import { shardedPk } from '../shards.js';

/**
 * A job as stored: `JOB#<id>` / `JOB`, beside its tasks (`JOB#<id>` / `TASK#<index>`), so one
 * query reads a job with all its tasks. The job item never changes after submission except to
 * record a cancellation or that its deadline was enforced; the job's status is derived from its
 * tasks, so concurrent task updates never contend on the job item.
 *
 * Its task counters (task-record.ts `JobTaskCounters`) live beside it in
 * {@link jobCounterShards} counter items, `JOB#<id>` / `COUNT#<nn>`, each counting the tasks whose
 * index is `nn` modulo the shard count: the claims of a big job's tasks by many nodes at once
 * spread over them instead of all colliding (DynamoDB cancels concurrent transactions on one item).
 * They are put at submission with byOwner keys just above the job's (`<createdAt>#<id>#c<nn>`), so a
 * newest-first page of `OWNER#<owner>` reads each job's counters right before the job item, in
 * the same query; `add` writes keep those keys.
 *
 * Indexes: byOwner `OWNER#<owner>` / `<createdAt>#<id>` (newest-first listing);
 * byDue `DUE#deadline#<nn>` / `<deadline>#<id>` (sharded by job id, functions/domain/shards.ts) until
 * the deadline has been enforced.
 */
export interface JobRecord {
  id: string;
  owner: string;
  /** The accepted spec, with env values replaced by {@link sealedValue}: the values live in `sealedEnv`. */
  spec: JobSpec;
  /** Envelope of the JSON env map under the job's data key (see protocol/envelope.ts). */
  sealedEnv?: string;
  /**
   * The job's data key, wrapped by the Keys port with context `{ jobId }`: present when the job
   * has env or was submitted with an Idempotency-Key (the key also keys the idempotency MAC).
   */
  wrappedKey?: string;
  createdAt: number;
  cancelledAt?: number;
  deadline?: number;
  deadlineEnforced?: boolean;
}

export const sealedValue = '[sealed]';

export const jobPk = (jobId: string): string => `JOB#${jobId}`;
export const jobKey = (jobId: string): ItemKey => ({ pk: jobPk(jobId), sk: 'JOB' });
export const ownerPk = (owner: string): string => `OWNER#${owner}`;
/**
 * The prefix of the deadline due list's shards, `DUE#deadline#<nn>` (see {@link deadlineDueShard});
 * also the one partition that jobs submitted before the shards were listed in, which the reaper
 * still sweeps until their deadlines have passed.
 */
export const deadlineDuePk = 'DUE#deadline';
/**
 * The shard of the deadline due list holding job `jobId`: every deadline job of the fleet is put
 * there at submission, a rate one partition (1,000 writes a second) need not take alone.
 */
export const deadlineDueShard = (jobId: string): string => shardedPk(deadlineDuePk, jobId);

/** At most this many counter items per job: a page of 200 jobs then reads at most 1,800 index items. */
export const maxJobCounterShards = 8;
/** How many counter items a job of `taskCount` tasks has: one per task up to {@link maxJobCounterShards}. */
export const jobCounterShards = (taskCount: number): number =>
  Math.max(1, Math.min(maxJobCounterShards, Math.trunc(taskCount)));
/** The counter item of the job's task `index`: tasks spread round-robin, so each item counts at most ceil(tasks / shards). */
export const jobCounterKey = (jobId: string, taskCount: number, index: number): ItemKey => ({
  pk: jobPk(jobId),
  sk: `COUNT#${String(index % jobCounterShards(taskCount)).padStart(2, '0')}`,
});
/** The job item's byOwner sort key: newest-first listing, and the job list's cursor. */
export const jobOwnerSk = (job: Pick<JobRecord, 'createdAt' | 'id'>): string =>
  `${sortableTime(job.createdAt)}#${job.id}`;

/** What a job counter item holds besides its counters: whose it is (listing groups items by it). */
export interface JobCounterRecord {
  jobId: string;
  shard: number;
}

/**
 * The puts that create the job's counter items, in its submission transaction (the tasks' first
 * counter adds fold into them), listed in byOwner just above the job item.
 */
export function putJobCounters(job: Pick<JobRecord, 'id' | 'owner' | 'createdAt' | 'spec'>): Write[] {
  return Array.from({ length: jobCounterShards(job.spec.tasks) }, (_, shard) => {
    const record: JobCounterRecord = { jobId: job.id, shard };
    return {
      kind: 'put' as const,
      key: jobCounterKey(job.id, job.spec.tasks, shard),
      data: record,
      indexes: { byOwner: { pk: ownerPk(job.owner), sk: `${jobOwnerSk(job)}#c${String(shard).padStart(2, '0')}` } },
      expectVersion: 0,
    };
  });
}

export function putJob(job: JobRecord, expectVersion: number): Write {
  const enforceDeadline = job.deadline !== undefined && !job.deadlineEnforced && job.cancelledAt === undefined;
  return {
    kind: 'put',
    key: jobKey(job.id),
    data: job,
    indexes: {
      byOwner: { pk: ownerPk(job.owner), sk: jobOwnerSk(job) },
      ...(enforceDeadline
        ? { byDue: { pk: deadlineDueShard(job.id), sk: `${sortableTime(job.deadline ?? 0)}#${job.id}` } }
        : {}),
    },
    expectVersion,
  };
}

/** Idempotency records live 24 hours: `IDEM#<owner>#<key>`. */
export const idempotencyTtlSeconds = 24 * 3600;
export const idempotencyKey = (owner: string, key: string): ItemKey => ({ pk: `IDEM#${owner}#${key}`, sk: 'IDEM' });
export interface IdempotencyRecord {
  jobId: string;
  /**
   * HMAC-SHA-256 of the canonical request under the job's data key (security/job-secrets.ts), to
   * tell an idempotent replay from a reused key. Never a plain hash: the spec holds secrets.
   */
  requestMac: string;
}
