import { z } from 'zod';
import { TaskId, Timestamp } from './common.js';

/**
 * How a node learns of work. The registration response names it:
 *
 * - `long-poll` (the embedded deployment): `GET /v1/nodes/{id}/work?wait=20` holds the request
 *   until a task that fits is bound to the node.
 * - `sqs` (the cloud deployment, see docs/cost-model.md): the node long-polls its pools' SQS
 *   queues itself, with short-lived credentials from `POST /v1/nodes/{id}/credentials` that allow
 *   only receiving from those queues. A message is a {@link WorkHint}, not a grant: the node
 *   claims the task with `POST /v1/nodes/{id}/claims`, where the same conditional write as the
 *   long poll's binds it (late binding), or is refused.
 */
export const Dispatch = z
  .discriminatedUnion('mode', [
    z.object({ mode: z.literal('long-poll') }),
    z.object({
      mode: z.literal('sqs'),
      region: z.string().min(1),
      queues: z.array(z.object({ pool: z.string(), url: z.url() })),
      /** Set only against emulators; agents use SQS's regional endpoint otherwise. */
      endpoint: z.url().optional(),
    }),
  ])
  .meta({ id: 'Dispatch' });
export type Dispatch = z.infer<typeof Dispatch>;

/** The body of a pool queue's message: a task was queued in this pool. */
export const WorkHint = z
  .object({
    taskId: TaskId,
    pool: z.string(),
    queuedAt: Timestamp,
  })
  .meta({ id: 'WorkHint' });
export type WorkHint = z.infer<typeof WorkHint>;

export const ClaimRequest = z
  .strictObject({
    taskId: TaskId,
    /** The hint's queue and receipt handle: the control plane deletes the hint once the claim holds. */
    queueUrl: z.url().max(2048).optional(),
    receiptHandle: z.string().min(1).max(8192).optional(),
  })
  .meta({ id: 'ClaimRequest' });
export type ClaimRequest = z.infer<typeof ClaimRequest>;

/** Temporary AWS credentials that allow receiving from, and releasing messages of, the node's pool queues. */
export const NodeCredentials = z
  .object({
    accessKeyId: z.string(),
    secretAccessKey: z.string(),
    sessionToken: z.string(),
    expiresAt: Timestamp,
  })
  .meta({ id: 'NodeCredentials' });
export type NodeCredentials = z.infer<typeof NodeCredentials>;
