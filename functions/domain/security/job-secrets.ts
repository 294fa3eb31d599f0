import { canonicalJson, type JobSpec, keyedDigest, sameDigest, sealEnvelope } from '../../../protocol/index.js';
import type { DataKey, Keys } from '../../ports/keys.js';

/**
 * A job's environment is sealed at rest under a per-job data key that the Keys port wraps
 * (KMS in the cloud), bound to the job id: the store holds only ciphertext and a wrapped key.
 * The control plane never opens it again: at dispatch the data key is re-wrapped to the node
 * (seal-to-node.ts), and only the node opens the env.
 *
 * The same data key keys the job's idempotency record: the record holds an HMAC of the request,
 * not a plain hash (a plain hash of a spec is a guessing oracle for its secrets).
 */
export interface JobSecrets {
  /** Envelope of the JSON env map; absent when the job has no env. */
  sealedEnv?: string;
  /** The job's data key, wrapped by the Keys port with context `{ jobId }`. */
  wrappedKey: string;
  /** HMAC-SHA-256 of the canonical spec under the data key, for the idempotency record. */
  requestMac: string;
}

const requestMacPurpose = 'gpuai/idempotency-request/v1';

/**
 * Seals the job's env (when it has one) under a fresh data key, and keys the request MAC with it.
 * Undefined when there is nothing to protect: no env and no idempotency record to key.
 */
export async function sealJob(
  keys: Keys,
  jobId: string,
  spec: JobSpec,
  keyedRequest: boolean,
): Promise<JobSecrets | undefined> {
  const hasEnv = Object.keys(spec.env).length > 0;
  if (!hasEnv && !keyedRequest) return undefined;
  const dataKey: DataKey = await keys.generateDataKey({ jobId });
  try {
    return {
      ...(hasEnv ? { sealedEnv: sealEnvelope(dataKey.plaintext, Buffer.from(JSON.stringify(spec.env)), jobId) } : {}),
      wrappedKey: dataKey.wrapped,
      requestMac: keyedDigest(dataKey.plaintext, requestMacPurpose, canonicalJson(spec)),
    };
  } finally {
    dataKey.plaintext.fill(0);
  }
}

/**
 * Whether `spec` is the request that created the job whose record holds `requestMac`: the job's
 * data key is unwrapped (only on a replay) and the MAC compared in constant time.
 */
export async function sameRequest(
  keys: Keys,
  job: { id: string; wrappedKey?: string },
  spec: JobSpec,
  requestMac: string | undefined,
): Promise<boolean> {
  if (job.wrappedKey === undefined || requestMac === undefined) return false;
  const dataKey = await keys.unwrap(job.wrappedKey, { jobId: job.id });
  try {
    return sameDigest(keyedDigest(dataKey, requestMacPurpose, canonicalJson(spec)), requestMac);
  } finally {
    dataKey.fill(0);
  }
}
