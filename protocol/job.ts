import { z } from 'zod';
import { AttestationLevel } from './attestation.js';
import { JobId, NodeId, Region, Sha256Hex, TaskId, Timestamp } from './common.js';
import { GpuVendor } from './node.js';
import { SealingPublicKey } from './sealing.js';

/** Hard limits, shared by the API, the CLI and the store (a job and its tasks are written in one transaction). */
export const limits = {
  maxTasksPerJob: 64,
  maxRetries: 10,
  maxEnvEntries: 64,
  maxTimeoutSeconds: 7 * 24 * 3600,
  maxBodyBytes: 256 * 1024,
  maxWaitSeconds: 20,
  /** A gang's tasks, their nodes and its record are bound in one transaction (100 writes at most). */
  maxGangTasks: 32,
} as const;

export const GpuRequirement = z
  .strictObject({
    count: z.int().min(0).max(64).default(0),
    vendor: GpuVendor.optional(),
    models: z.array(z.string().min(1).max(64)).max(16).optional().meta({
      description:
        'Accepted models, matched case-insensitively as substrings of the device model or as an accelerator class (h100, rtx4090). Each must name a known class (of `vendor`, when given), else 400 unknown_gpu_model.',
    }),
    minVramMiB: z.int().min(0).max(16_777_216).optional(),
    minComputeCapability: z
      .string()
      .regex(/^\d{1,2}\.\d{1,2}$/)
      .optional(),
  })
  .meta({ id: 'GpuRequirement' });
export type GpuRequirement = z.infer<typeof GpuRequirement>;

export const Resources = z
  .strictObject({
    gpus: GpuRequirement.default({ count: 0 }),
    cpuCores: z.int().min(1).max(1024).optional(),
    memoryMiB: z.int().min(1).max(1_073_741_824).optional(),
  })
  .meta({ id: 'Resources' });

export const VerificationPolicy = z
  .discriminatedUnion('mode', [
    z.strictObject({ mode: z.literal('none') }),
    z.strictObject({
      mode: z.literal('expected-hash'),
      sha256: Sha256Hex.meta({ description: 'Every task result hash must equal this value.' }),
    }),
  ])
  .meta({ id: 'VerificationPolicy' });
export type VerificationPolicy = z.infer<typeof VerificationPolicy>;

/**
 * The verification policy as views show it: an `expected-hash` job's value is the verifier's
 * secret (a node that saw it would just echo it), so no view carries it, not even the owner's.
 */
export const VerificationView = z
  .discriminatedUnion('mode', [
    z.object({ mode: z.literal('none') }),
    z.object({ mode: z.literal('expected-hash') }).meta({ description: 'The expected value is never shown.' }),
  ])
  .meta({ id: 'VerificationView' });
export type VerificationView = z.infer<typeof VerificationView>;

/** What a view shows of a verification policy. */
export const verificationView = (policy: VerificationPolicy): VerificationView => ({ mode: policy.mode });

const envNamePattern = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const EnvName = z.string().regex(envNamePattern);

/**
 * Text shown to people (job names): no control characters (C0, DEL, C1), which would carry
 * terminal escape sequences into `gpuai jobs list`, and no bidirectional overrides, which reorder
 * what a terminal shows.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this pattern refuses.
export const displayText = /^[^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*$/;
/**
 * An argument or environment value: no NUL, which no process can receive (execve ends the string
 * there), so the agent would fail the task only after a full lease.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is what this pattern refuses.
export const noNul = /^[^\u0000]*$/;
const Arg = z.string().max(16_384).regex(noNul, 'must not contain NUL characters');
const Decimal = z.string().regex(/^\d{1,18}(\.\d{1,18})?$/);

export const JobSpec = z
  .strictObject({
    name: z.string().min(1).max(128).regex(displayText, 'must not contain control characters').optional(),
    image: z
      .string()
      .min(1)
      .max(512)
      .regex(displayText, 'must not contain control characters')
      .optional()
      .meta({ description: 'Container image; without one the command runs as a process on nodes that allow it.' }),
    command: z.array(Arg).min(1).max(256),
    env: z
      .record(EnvName, Arg)
      .refine((env) => Object.keys(env).length <= limits.maxEnvEntries, {
        message: `at most ${limits.maxEnvEntries} variables`,
      })
      // The key pattern and the count, stated in the OpenAPI document too (the generator drops both).
      .meta({ propertyNames: { pattern: envNamePattern.source }, maxProperties: limits.maxEnvEntries })
      .default({}),
    resources: Resources.default({ gpus: { count: 0 } }),
    workload: z
      .string()
      .regex(/^[a-z0-9][a-z0-9-]{0,31}$/)
      .default('batch')
      .meta({ description: 'Workload type, e.g. inference, training, rendering, batch.' }),
    tasks: z.int().min(1).max(limits.maxTasksPerJob).default(1),
    gang: z
      .boolean()
      .optional()
      .meta({
        description: `All tasks start together, each on its own node: none is handed out until a node that fits is polling for every one, then all are bound at once (at most ${limits.maxGangTasks} tasks). A task retried later runs alone.`,
      }),
    priority: z.int().min(0).max(9).optional().meta({
      description:
        'Scheduling priority, 0-9 (default 5): within a pool, tasks of a higher priority are dispatched first; within a priority, the tenant with the least recent work goes first, then the oldest task.',
    }),
    retries: z
      .int()
      .min(0)
      .max(limits.maxRetries)
      .default(2)
      .meta({ description: 'Retry budget per task: a task fails after 1 + retries attempts have failed.' }),
    timeoutSeconds: z.int().min(1).max(limits.maxTimeoutSeconds).default(3600),
    verification: VerificationPolicy.default({ mode: 'none' }),
    maxPricePerGpuHour: Decimal.optional().meta({ description: 'Price cap in GPUAI tokens per GPU-hour.' }),
    deadline: Timestamp.optional().meta({
      description: 'Tasks not finished by then are failed and refunded. Must lie in the future at submission.',
      example: '2099-12-31T23:59:59Z',
    }),
    regions: z.array(Region).min(1).max(16).optional(),
    resultKey: SealingPublicKey.optional().meta({
      description:
        'X25519 public key (raw, base64url). When set, the node seals log tails and progress messages to it (HPKE) before reporting: the control plane holds only ciphertext. `gpuai jobs keygen` makes one.',
    }),
    minAttestation: AttestationLevel.optional().meta({
      description: 'Only nodes whose unexpired attestation is at least this level receive the tasks.',
    }),
  })
  .meta({ id: 'JobSpec' });
export type JobSpecInput = z.input<typeof JobSpec>;
export type JobSpec = z.infer<typeof JobSpec>;

export const TaskState = z
  .enum(['queued', 'assigned', 'running', 'reported', 'verified', 'failed', 'cancelled'])
  .meta({ id: 'TaskState' });
export type TaskState = z.infer<typeof TaskState>;
export const terminalTaskStates: readonly TaskState[] = ['verified', 'failed', 'cancelled'];

export const JobStatus = z.enum(['queued', 'running', 'succeeded', 'failed', 'cancelled']).meta({ id: 'JobStatus' });
export type JobStatus = z.infer<typeof JobStatus>;
export const terminalJobStatuses: readonly JobStatus[] = ['succeeded', 'failed', 'cancelled'];

export const AttemptOutcome = z
  .enum(['completed', 'failed', 'lease-expired', 'released', 'cancelled', 'rejected'])
  .meta({ id: 'AttemptOutcome' });
export type AttemptOutcome = z.infer<typeof AttemptOutcome>;

/**
 * The node's report that ended an attempt, in the fields that decide what happened: a repeat of
 * the same report is answered as the first was, one that differs is refused (409 report_conflict).
 */
export const EndingReport = z
  .discriminatedUnion('kind', [
    z.object({ kind: z.literal('result'), exitCode: z.int(), resultHash: Sha256Hex }),
    z.object({ kind: z.literal('fail'), reason: z.enum(['error', 'timeout', 'released']) }),
  ])
  .meta({ id: 'EndingReport' });
export type EndingReport = z.infer<typeof EndingReport>;

export const Attempt = z
  .object({
    number: z.int().min(1),
    nodeId: NodeId,
    assignedAt: Timestamp,
    endedAt: Timestamp.optional(),
    outcome: AttemptOutcome.optional(),
    detail: z.string().optional(),
    gpus: z.array(z.string()).optional().meta({ description: 'UUIDs of the devices the attempt ran on.' }),
    report: EndingReport.optional().meta({ description: "The node's report that ended the attempt, if one did." }),
  })
  .meta({ id: 'Attempt' });
export type Attempt = z.infer<typeof Attempt>;

export const OutputDigest = z
  .strictObject({
    name: z.string().min(1).max(512),
    sha256: Sha256Hex,
    bytes: z.int().min(0),
  })
  .meta({ id: 'OutputDigest' });
export type OutputDigest = z.infer<typeof OutputDigest>;

export const TaskMetrics = z
  .strictObject({
    wallMs: z.int().min(0),
    cpuUserMs: z.int().min(0).optional(),
    cpuSystemMs: z.int().min(0).optional(),
    maxRssKiB: z.int().min(0).optional(),
  })
  .meta({ id: 'TaskMetrics' });

export const TaskResult = z
  .object({
    exitCode: z.int(),
    resultHash: Sha256Hex,
    outputs: z.array(OutputDigest),
    metrics: TaskMetrics,
    logTail: z.string().optional(),
    reportedAt: Timestamp,
  })
  .meta({ id: 'TaskResult' });
export type TaskResult = z.infer<typeof TaskResult>;

export const TaskProgress = z
  .object({
    percent: z.number().min(0).max(100).optional(),
    message: z.string().optional(),
    logTail: z.string().optional(),
    updatedAt: Timestamp,
  })
  .meta({ id: 'TaskProgressView' });

export const TaskView = z
  .object({
    id: TaskId,
    jobId: JobId,
    index: z.int(),
    state: TaskState,
    attempt: z.int().min(0).meta({ description: 'Number of attempts started so far.' }),
    maxAttempts: z.int().min(1),
    pool: z.string().optional(),
    nodeId: NodeId.optional(),
    leaseExpiresAt: Timestamp.optional(),
    progress: TaskProgress.optional(),
    result: TaskResult.optional(),
    error: z.object({ code: z.string(), message: z.string() }).optional(),
    attempts: z.array(Attempt).meta({ description: 'The first attempt and the latest ones; see `attemptsDropped`.' }),
    attemptsDropped: z
      .int()
      .min(1)
      .optional()
      .meta({ description: 'Attempts left out of `attempts`, between the first and the latest.' }),
    queuedAt: Timestamp,
    updatedAt: Timestamp,
  })
  .meta({ id: 'Task' });
export type TaskView = z.infer<typeof TaskView>;

export const TaskCounts = z
  .object(Object.fromEntries(TaskState.options.map((s) => [s, z.int().min(0)])) as Record<TaskState, z.ZodInt>)
  .meta({ id: 'TaskCounts' });
export type TaskCounts = Record<TaskState, number>;

/** The accepted spec as views show it: env values sealed, the verification secret left out. */
export const JobSpecView = JobSpec.extend({ verification: VerificationView }).meta({ id: 'JobSpecView' });
export type JobSpecView = z.infer<typeof JobSpecView>;

export const JobView = z
  .object({
    id: JobId,
    status: JobStatus,
    spec: JobSpecView,
    taskCounts: TaskCounts,
    createdAt: Timestamp,
    updatedAt: Timestamp,
    finishedAt: Timestamp.optional(),
  })
  .meta({ id: 'Job' });
export type JobView = z.infer<typeof JobView>;

export const JobWithTasks = JobView.extend({ tasks: z.array(TaskView) }).meta({ id: 'JobWithTasks' });
export type JobWithTasks = z.infer<typeof JobWithTasks>;

export const JobList = z.object({ jobs: z.array(JobView), cursor: z.string().optional() }).meta({ id: 'JobList' });
export type JobList = z.infer<typeof JobList>;

export const TaskList = z.object({ tasks: z.array(TaskView) }).meta({ id: 'TaskList' });
export type TaskList = z.infer<typeof TaskList>;
