import type { JobSpec } from '../../../protocol/index.js';
import type { ItemKey, Write } from '../../ports/store.js';
import { sortableTime } from '../records.js';

/**
 * A job as stored: `JOB#<id>` / `JOB`, beside its tasks (`JOB#<id>` / `TASK#<index>`), so one
 * query reads a job with all its tasks. The job item never changes after submission except to
 * record a cancellation or that its deadline was enforced; the job's status is derived from its
 * tasks, so concurrent task updates never contend on the job item.
 *
 * Indexes: byOwner `OWNER#<owner>` / `<createdAt>#<id>` (newest-first listing);
 * byDue `DUE#deadline` / `<deadline>#<id>` until the deadline has been enforced.
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
export const deadlineDuePk = 'DUE#deadline';

export function putJob(job: JobRecord, expectVersion: number): Write {
  const enforceDeadline = job.deadline !== undefined && !job.deadlineEnforced && job.cancelledAt === undefined;
  return {
    kind: 'put',
    key: jobKey(job.id),
    data: job,
    indexes: {
      byOwner: { pk: ownerPk(job.owner), sk: `${sortableTime(job.createdAt)}#${job.id}` },
      ...(enforceDeadline ? { byDue: { pk: deadlineDuePk, sk: `${sortableTime(job.deadline ?? 0)}#${job.id}` } } : {}),
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
