/** A JSON Web Key as a key set lists it (only the members the verifier reads are typed). */
export interface JsonWebKey {
  kty: string;
  kid?: string;
  alg?: string;
  use?: string;
  crv?: string;
  x?: string;
  y?: string;
  n?: string;
  e?: string;
  [member: string]: unknown;
}

export interface JsonWebKeySet {
  keys: JsonWebKey[];
}

/** Policy of the NVIDIA attestation token verifier. */
export interface NvidiaTokenSettings {
  /** The verifier's signing keys (NRAS publishes them at /.well-known/jwks.json). None: GPU evidence is refused. */
  jwks?: JsonWebKeySet;
  /** Accepted `alg` values; `none` and HMAC algorithms are never accepted, whatever this says. */
  algorithms: string[];
  /** When set, the token's `iss` must equal it (e.g. https://nras.attestation.nvidia.com). */
  issuer?: string;
  /** Clock tolerance for `exp`, `nbf` and `iat`, in seconds. */
  leewaySeconds: number;
}

/** Policy of the TPM quote verifier. */
export interface TpmQuoteSettings {
  /** PCR indices every quote must cover (sha256 bank). */
  requiredPcrs: number[];
  /** Reference values: when a PCR is listed here, its quoted value must equal it (lowercase hex). */
  expectedPcrs?: Record<string, string>;
}

/** Policy of the agent measurement verifier. */
export interface MeasurementSettings {
  /** When set, only these bundle digests are accepted (known-good agent releases). */
  acceptedBundles?: string[];
}

export interface AttestationSettings {
  /** How long an accepted attestation holds: the re-attestation interval. */
  validityMs: number;
  /** How long a challenge nonce may be answered. */
  challengeTtlMs: number;
  measurement: MeasurementSettings;
  tpm: TpmQuoteSettings;
  nvidia: NvidiaTokenSettings;
}

/** One hour of validity, a minute to answer a challenge, PCRs 0-7 quoted, ES384 tokens. */
export const defaultAttestationSettings: AttestationSettings = {
  validityMs: 60 * 60 * 1000,
  challengeTtlMs: 60 * 1000,
  measurement: {},
  tpm: { requiredPcrs: [0, 1, 2, 3, 4, 5, 6, 7] },
  nvidia: { algorithms: ['ES384'], leewaySeconds: 30 },
};
