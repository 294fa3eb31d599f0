import type { MeasurementEvidence } from '../../../../protocol/index.js';
import { AttestationRefusedError } from './errors.js';
import type { MeasurementSettings } from './settings.js';

export interface MeasurementVerdict {
  level: 'measured';
  measurement: { agentVersion: string; bundleSha256: string; configSha256: string };
}

/**
 * Verifies an agent measurement. Its binding is the request itself: the evidence travels in a
 * body with the challenge nonce, signed with the node's Ed25519 key, so the measurement is the
 * node's own statement, fresh for this challenge. It proves what the agent says it runs, not that
 * it runs it (a modified agent can report the digests of an unmodified one): that is what the TPM
 * level adds. When known-good bundle digests are configured, any other bundle is refused.
 */
export function verifyMeasurement(
  evidence: MeasurementEvidence,
  agentVersion: string,
  settings: MeasurementSettings,
): MeasurementVerdict {
  if (evidence.agentVersion !== agentVersion) {
    throw new AttestationRefusedError(
      'measurement_version_mismatch',
      `the measurement is of agent ${evidence.agentVersion} but the node registered as ${agentVersion}`,
      'agent-measurement',
    );
  }
  if (settings.acceptedBundles !== undefined && !settings.acceptedBundles.includes(evidence.bundleSha256)) {
    throw new AttestationRefusedError(
      'measurement_unknown_bundle',
      `agent bundle ${evidence.bundleSha256} is not one of the accepted agent releases`,
      'agent-measurement',
    );
  }
  const { bundleSha256, configSha256 } = evidence;
  return { level: 'measured', measurement: { agentVersion, bundleSha256, configSha256 } };
}
