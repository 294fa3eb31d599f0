import type { AttestationLevel, EvidenceType, NodeAttestation } from '../../../../protocol/index.js';
import { isoTime } from '../../records.js';

/**
 * What a node has proved, as stored on its record (`NodeRecord.attestation`). Replaced by every
 * accepted attestation; never shown in full (the node view shows the level and expiry only).
 */
export interface AttestationRecord {
  /** The highest level the last accepted evidence proved. */
  level: AttestationLevel;
  /** The evidence types that proved it. */
  kind: EvidenceType[];
  /** Epoch ms. */
  verifiedAt: number;
  /** Epoch ms; from then on the node counts as `none` until it attests again. */
  expiresAt: number;
  /** The agent measurement that was attested (bundle and config digests). */
  measurement?: { agentVersion: string; bundleSha256: string; configSha256: string };
  /** The PCR values the TPM quote attested (sha256 bank), by index. */
  pcrs?: Record<string, string>;
}

/**
 * The TPM attestation key pinned to a node by its first accepted quote (trust on first use): a
 * later quote signed by any other key is refused. Survives the attestation's expiry.
 */
export interface PinnedAttestationKey {
  /** SPKI DER, base64. */
  spki: string;
  pinnedAt: number;
}

/** The level that counts now: `none` without an attestation or once it has expired. */
export function effectiveAttestationLevel(attestation: AttestationRecord | undefined, now: number): AttestationLevel {
  if (attestation === undefined || attestation.expiresAt <= now) return 'none';
  return attestation.level;
}

/** The node view's part: the effective level and, while it holds, its expiry. */
export function toNodeAttestationView(attestation: AttestationRecord | undefined, now: number): NodeAttestation {
  const level = effectiveAttestationLevel(attestation, now);
  return level === 'none' || attestation === undefined
    ? { level }
    : { level, expiresAt: isoTime(attestation.expiresAt) };
}
