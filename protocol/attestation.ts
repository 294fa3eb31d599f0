import { z } from 'zod';
import { NodeId, Sha256Hex, Timestamp } from './common.js';

/**
 * Remote attestation: what a node has proved about itself, weakest first.
 *
 *   none      nothing proved (self-reported inventory only)
 *   measured  a signed measurement of the agent: sha-256 of its bundle and config, bound to a
 *             fresh nonce inside a request signed with the node key
 *   tpm       measured, plus a TPM 2.0 quote over PCRs with the nonce as qualifying data, signed by
 *             an attestation key pinned to this node (trust on first use)
 *   tpm+gpu   tpm, plus NVIDIA GPU confidential-computing evidence: an attestation token (JWT)
 *             that verifies against the configured key set and carries the nonce
 *
 * A level holds until its expiry (the re-attestation interval); an expired level counts as `none`.
 */
export const AttestationLevel = z.enum(['none', 'measured', 'tpm', 'tpm+gpu']).meta({
  id: 'AttestationLevel',
  description: 'none < measured (signed agent measurement) < tpm (TPM 2.0 quote) < tpm+gpu (plus NVIDIA CC token).',
});
export type AttestationLevel = z.infer<typeof AttestationLevel>;

/** Every level, weakest first. */
export const attestationLevels: readonly AttestationLevel[] = AttestationLevel.options;

/** The level's position in the order (none = 0). */
export const attestationRank = (level: AttestationLevel): number => attestationLevels.indexOf(level);

/** True when `have` is at least `need`. */
export const meetsAttestation = (have: AttestationLevel, need: AttestationLevel): boolean =>
  attestationRank(have) >= attestationRank(need);

/** A challenge nonce: 32 random bytes, lowercase hex. It is the TPM quote's qualifying data as is. */
export const AttestationNonce = z
  .string()
  .regex(/^[0-9a-f]{64}$/)
  .meta({ id: 'AttestationNonce', description: '32 random bytes, lowercase hex; single use.' });

export const AttestationChallenge = z
  .object({
    nodeId: NodeId,
    nonce: AttestationNonce,
    expiresAt: Timestamp.meta({ description: 'Answer before this time; the nonce is refused afterwards.' }),
  })
  .meta({ id: 'AttestationChallenge' });
export type AttestationChallenge = z.infer<typeof AttestationChallenge>;

const Base64 = (maxChars: number) =>
  z
    .string()
    .min(4)
    .max(maxChars)
    .regex(/^[A-Za-z0-9+/]+={0,2}$/);

/**
 * The agent's own measurement. The digests are computed by the agent over its bundle (every source
 * and built file of the agent, sorted by path) and its effective configuration; they are bound to
 * the nonce by the Ed25519 request signature that covers the whole body.
 */
export const MeasurementEvidence = z
  .strictObject({
    type: z.literal('agent-measurement'),
    agentVersion: z.string().min(1).max(32),
    bundleSha256: Sha256Hex.meta({
      description: 'sha-256 over "<path>\\0<sha-256 hex>\\n" of each bundle file, sorted.',
    }),
    configSha256: Sha256Hex.meta({
      description: 'sha-256 of the canonical JSON of the effective agent configuration.',
    }),
    files: z.int().min(1).max(100_000),
  })
  .meta({ id: 'MeasurementEvidence' });
export type MeasurementEvidence = z.infer<typeof MeasurementEvidence>;

export const PcrValue = z.strictObject({ index: z.int().min(0).max(23), value: Sha256Hex });

/** A TPM 2.0 quote as `tpm2_quote -q <nonce> -m MSG -s SIG -o PCRS -F values -g sha256` writes it. */
export const TpmQuoteEvidence = z
  .strictObject({
    type: z.literal('tpm-quote'),
    akPublicKey: z
      .string()
      .min(1)
      .max(4096)
      .regex(/^-----BEGIN PUBLIC KEY-----[A-Za-z0-9+/=\s]+-----END PUBLIC KEY-----\s*$/)
      .meta({
        description: 'The attestation key, SPKI PEM (`tpm2_createak -f pem`). Pinned to the node on first use.',
      }),
    message: Base64(4096).meta({ description: 'The marshalled TPMS_ATTEST (the `-m` file), base64.' }),
    signature: Base64(4096).meta({ description: 'The TPMT_SIGNATURE (the `-s` file), base64.' }),
    pcrBank: z.literal('sha256'),
    pcrs: z
      .array(PcrValue)
      .min(1)
      .max(24)
      .meta({ description: 'The quoted PCR values in the sha256 bank, in ascending index order.' }),
  })
  .meta({ id: 'TpmQuoteEvidence' });
export type TpmQuoteEvidence = z.infer<typeof TpmQuoteEvidence>;

/**
 * An NVIDIA attestation token for the node's GPUs in confidential-computing mode: the overall JWT
 * (ES384 typically) that NVIDIA's verifier (NRAS, or the local verifier) issues for a nonce.
 */
export const NvidiaTokenEvidence = z
  .strictObject({
    type: z.literal('nvidia-gpu-token'),
    token: z
      .string()
      .min(1)
      .max(32_768)
      .regex(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/)
      .meta({ description: 'Compact JWS.' }),
  })
  .meta({ id: 'NvidiaTokenEvidence' });
export type NvidiaTokenEvidence = z.infer<typeof NvidiaTokenEvidence>;

export const AttestationEvidence = z
  .discriminatedUnion('type', [MeasurementEvidence, TpmQuoteEvidence, NvidiaTokenEvidence])
  .meta({ id: 'AttestationEvidence' });
export type AttestationEvidence = z.infer<typeof AttestationEvidence>;
export type EvidenceType = AttestationEvidence['type'];
export const EvidenceType = z.enum(['agent-measurement', 'tpm-quote', 'nvidia-gpu-token']).meta({ id: 'EvidenceType' });

export const AttestationRequest = z
  .strictObject({
    nonce: AttestationNonce,
    evidence: z
      .array(AttestationEvidence)
      .min(1)
      .max(3)
      .refine((items) => new Set(items.map((i) => i.type)).size === items.length, {
        message: 'each evidence type at most once',
      }),
  })
  .meta({ id: 'AttestationRequest' });
export type AttestationRequest = z.infer<typeof AttestationRequest>;

export const AttestationResult = z
  .object({
    nodeId: NodeId,
    level: AttestationLevel,
    evidence: z.array(EvidenceType).meta({ description: 'The evidence types that proved the level.' }),
    verifiedAt: Timestamp,
    expiresAt: Timestamp.meta({ description: 'Attest again before this; afterwards the node counts as `none`.' }),
  })
  .meta({ id: 'AttestationResult' });
export type AttestationResult = z.infer<typeof AttestationResult>;

/** What the node view shows: the effective level (`none` once expired) and its expiry. */
export const NodeAttestation = z
  .object({ level: AttestationLevel, expiresAt: Timestamp.optional() })
  .meta({ id: 'NodeAttestation' });
export type NodeAttestation = z.infer<typeof NodeAttestation>;
