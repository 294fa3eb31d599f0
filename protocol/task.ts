import { z } from 'zod';
import { JobId, Sha256Hex, TaskId, Timestamp } from './common.js';
import { OutputDigest, TaskMetrics } from './job.js';
import { SealedEnv, SealingPublicKey } from './sealing.js';

/**
 * What a node receives when the control plane binds a task to it (late binding, at poll time).
 * It never carries the job's env in the clear: `sealedEnv` is the env's at-rest envelope plus the
 * job's data key HPKE-sealed to this node's sealing key for this attempt (protocol/sealing.ts).
 */
export const Assignment = z
  .object({
    taskId: TaskId,
    jobId: JobId,
    index: z.int(),
    taskCount: z.int(),
    attempt: z.int().min(1),
    leaseExpiresAt: Timestamp,
    leaseMs: z.int(),
    image: z.string().optional(),
    command: z.array(z.string()).min(1),
    sealedEnv: SealedEnv.optional().meta({
      description: "The job's env, sealed to this node for this attempt; absent when the job has no env.",
    }),
    resultKey: SealingPublicKey.optional().meta({
      description: 'Seal log tails and progress messages to this key before reporting them.',
    }),
    timeoutSeconds: z.int(),
    gpuIndices: z.array(z.int()).meta({ description: 'Indices of the node GPUs this task may use.' }),
  })
  .meta({ id: 'Assignment' });
export type Assignment = z.infer<typeof Assignment>;

/** An assignment whose env the node has opened: it exists only in the agent's memory, never on the wire. */
export type OpenedAssignment = Omit<Assignment, 'sealedEnv'> & { env: Record<string, string> };

export const WorkResponse = z.object({ assignment: Assignment }).meta({ id: 'WorkResponse' });

export const WorkQuery = z.strictObject({
  wait: z.coerce.number().int().min(0).max(20).default(0).meta({ description: 'Seconds to hold the poll open.' }),
});

/** The attempt number is the lease token: reports from a stale attempt are refused with 409. */
const AttemptRef = { attempt: z.int().min(1) };

export const ProgressReport = z
  .strictObject({
    ...AttemptRef,
    percent: z.number().min(0).max(100).optional(),
    message: z.string().max(1024).optional(),
    logTail: z.string().max(8192).optional(),
  })
  .meta({ id: 'ProgressReport' });
export type ProgressReport = z.infer<typeof ProgressReport>;

export const LeaseResponse = z.object({ leaseExpiresAt: Timestamp }).meta({ id: 'LeaseResponse' });
export type LeaseResponse = z.infer<typeof LeaseResponse>;

export const ResultReport = z
  .strictObject({
    ...AttemptRef,
    exitCode: z.int().min(-255).max(255),
    resultHash: Sha256Hex,
    outputs: z.array(OutputDigest).max(1024),
    metrics: TaskMetrics,
    logTail: z.string().max(8192).optional(),
  })
  .meta({ id: 'ResultReport' });
export type ResultReport = z.infer<typeof ResultReport>;

export const FailureReport = z
  .strictObject({
    ...AttemptRef,
    reason: z.enum(['error', 'timeout', 'released']).meta({
      description:
        'released: the node hands the task back (shutting down); it does not count against the retry budget until the task has been released twice as many times as its budget allows attempts.',
    }),
    message: z.string().max(2048),
    logTail: z.string().max(8192).optional(),
  })
  .meta({ id: 'FailureReport' });
export type FailureReport = z.infer<typeof FailureReport>;

/** The longest round trip a heartbeat may report: beyond a minute it is an outage, not a latency. */
export const maxReportedLatencyMs = 60_000;

export const HeartbeatRequest = z
  .strictObject({
    tasks: z.array(z.strictObject({ taskId: TaskId, ...AttemptRef })).max(64),
    latencyMs: z.int().min(1).max(maxReportedLatencyMs).optional().meta({
      description:
        "The node's smoothed round trip to the control plane, ms, as it measured its own requests (never its long polls). Optional and occasional (the agent sends it every 5 minutes at most): the control plane learns the node's latency from it, which routing and placement weigh.",
    }),
  })
  .meta({ id: 'HeartbeatRequest' });
export type HeartbeatRequest = z.infer<typeof HeartbeatRequest>;

export const HeartbeatResponse = z
  .object({
    abort: z
      .array(z.object({ taskId: TaskId, attempt: z.int(), reason: z.string() }))
      .meta({ description: 'Tasks the node must stop: cancelled, past deadline, or no longer leased to it.' }),
    heartbeatIntervalMs: z.int().meta({
      description:
        'When to beat next: the busy interval when this beat listed tasks (it extends their leases), the idle one otherwise.',
    }),
    progressIntervalMs: z.int().optional().meta({
      description:
        'How often a running task is worth a progress report (log tail, percent). Leases are kept by heartbeats, so no report is needed to keep one.',
    }),
  })
  .meta({ id: 'HeartbeatResponse' });
export type HeartbeatResponse = z.infer<typeof HeartbeatResponse>;
