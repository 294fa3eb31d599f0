import { type SealedEnv, sealDataKeyToNode, sealingSuite } from '../../../protocol/index.js';
import type { Keys } from '../../ports/keys.js';

/** What sealing reads of a job record: its env envelope and wrapped data key (see job-secrets.ts). */
export interface SealableJob {
  id: string;
  sealedEnv?: string;
  wrappedKey?: string;
  spec?: { resultKey?: string | undefined };
}

/** What sealing reads of a node record: its id and the X25519 key of its signed registration. */
export interface SealingNode {
  id: string;
  sealingKey?: string;
}

/** Whether the job carries env secrets that only a node with a sealing key may receive. */
export const hasSecrets = (job: SealableJob): boolean => job.sealedEnv !== undefined;

/**
 * Whether the node may receive the job at all: a job with secrets needs a node that can open
 * them, and a job with a result key a node that seals its output. Both came with the same agent
 * version; an older agent (no sealing key) would drop `resultKey` and report its logs in the clear.
 */
export const canReceive = (node: SealingNode, job: SealableJob): boolean =>
  (!hasSecrets(job) && job.spec?.resultKey === undefined) || node.sealingKey !== undefined;

export class NodeCannotOpenSecretsError extends Error {
  override name = 'NodeCannotOpenSecretsError';
}

/**
 * Jobs sealed to the node: the job's data key is unwrapped by the Keys port (KMS in the cloud)
 * and HPKE-sealed to the node's sealing key, bound to the job, task, attempt and node. The env
 * itself travels in its at-rest envelope, so the control plane never holds it in the clear; the
 * plaintext data key lives only for this call and is zeroed after.
 *
 * Call this after the claim has been won: a racer that loses the claim must not cost a KMS call.
 *
 * @returns undefined when the job has no env.
 * @throws {@link NodeCannotOpenSecretsError} when the job has secrets and the node no sealing key.
 */
export async function sealEnvToNode(
  keys: Keys,
  job: SealableJob,
  node: SealingNode,
  task: { id: string; attempt: number },
): Promise<SealedEnv | undefined> {
  if (job.sealedEnv === undefined || job.wrappedKey === undefined) return undefined;
  if (node.sealingKey === undefined) {
    throw new NodeCannotOpenSecretsError(`node ${node.id} has no sealing key; job ${job.id} carries env secrets`);
  }
  const dataKey = await keys.unwrap(job.wrappedKey, { jobId: job.id });
  try {
    const { enc, key } = await sealDataKeyToNode(dataKey, node.sealingKey, {
      jobId: job.id,
      taskId: task.id,
      attempt: task.attempt,
      nodeId: node.id,
    });
    return { suite: sealingSuite, enc, key, envelope: job.sealedEnv };
  } finally {
    dataKey.fill(0);
  }
}
