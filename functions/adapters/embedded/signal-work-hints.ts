import type { CredentialIssuer } from '../../ports/node-credentials.js';
import type { WorkDispatch, WorkHints } from '../../ports/work-hints.js';

/**
 * The {@link WorkHints} port of the embedded deployment: nodes long-poll the control plane, whose
 * waiting polls the Router already wakes through the Signal, so a hint needs nothing more and there
 * is no message to acknowledge.
 */
export class SignalWorkHints implements WorkHints {
  async dispatchFor(_pools: readonly string[]): Promise<WorkDispatch> {
    return { mode: 'long-poll' };
  }

  async publish(): Promise<void> {}

  async acknowledge(): Promise<void> {}
}

/** The {@link CredentialIssuer} of a deployment that gives nodes no cloud credentials. */
export const noCredentials: CredentialIssuer = {
  issue: async () => undefined,
};
