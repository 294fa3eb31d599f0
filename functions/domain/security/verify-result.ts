import type { TaskResult, VerificationPolicy } from '../../../protocol/index.js';

export type VerificationOutcome = { accepted: true } | { accepted: false; reason: string };

/**
 * Decides whether a reported result satisfies the job's verification policy. Only policies that
 * the protocol can express reach here, so a result is never accepted without the check its job
 * asked for.
 */
export function verifyResult(policy: VerificationPolicy, result: TaskResult): VerificationOutcome {
  switch (policy.mode) {
    case 'none':
      return { accepted: true };
    case 'expected-hash':
      // The reason lands in the attempt's detail, which nodes and views see: it never names the value.
      return result.resultHash === policy.sha256
        ? { accepted: true }
        : { accepted: false, reason: `result hash ${result.resultHash} differs from the expected hash` };
  }
}
