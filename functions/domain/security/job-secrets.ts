import { openEnvelope, sealEnvelope } from '../../../protocol/index.js';
import type { Keys } from '../../ports/keys.js';

/**
 * A job's environment is sealed at rest under a per-job data key that the Keys port wraps
 * (KMS in the cloud), bound to the job id: the store holds only ciphertext and a wrapped key.
 */
export async function sealJobEnv(
  keys: Keys,
  jobId: string,
  env: Record<string, string>,
): Promise<{ sealedEnv: string; wrappedKey: string } | undefined> {
  if (Object.keys(env).length === 0) return undefined;
  const dataKey = await keys.generateDataKey({ jobId });
  const sealedEnv = sealEnvelope(dataKey.plaintext, Buffer.from(JSON.stringify(env)), jobId);
  return { sealedEnv, wrappedKey: dataKey.wrapped };
}

export async function openJobEnv(
  keys: Keys,
  jobId: string,
  sealed: { sealedEnv?: string; wrappedKey?: string },
): Promise<Record<string, string>> {
  if (sealed.sealedEnv === undefined || sealed.wrappedKey === undefined) return {};
  const dataKey = await keys.unwrap(sealed.wrappedKey, { jobId });
  return JSON.parse(openEnvelope(dataKey, sealed.sealedEnv, jobId).toString('utf8')) as Record<string, string>;
}
