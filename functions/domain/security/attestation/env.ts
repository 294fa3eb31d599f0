import { type AttestationSettings, defaultAttestationSettings, type JsonWebKeySet } from './settings.js';

/** A variable of the attestation settings holds a bad value; the message names it. */
export class AttestationConfigError extends Error {
  override name = 'AttestationConfigError';
}

/**
 * The attestation settings from the environment, the same variables in every deployment:
 *
 *   GPUAI_ATTESTATION_VALIDITY_S   how long an accepted attestation holds (re-attestation interval), default 3600
 *   GPUAI_ATTESTATION_CHALLENGE_S  how long a challenge may be answered, default 60
 *   GPUAI_AGENT_BUNDLES            comma-separated sha-256 digests of accepted agent bundles (default: any)
 *   GPUAI_TPM_REQUIRED_PCRS        comma-separated PCR indices every quote must cover, default 0-7
 *   GPUAI_TPM_EXPECTED_PCRS        reference values, `7=<hex>,0=<hex>`
 *   GPUAI_NVIDIA_JWKS              the NVIDIA verifier's key set, JSON (NRAS: /.well-known/jwks.json)
 *   GPUAI_NVIDIA_ALGORITHMS        accepted token algorithms, default ES384
 *   GPUAI_NVIDIA_ISSUER            required `iss` of tokens (default: not checked)
 *
 * @throws {@link AttestationConfigError} naming the variable.
 */
export function attestationSettingsFromEnv(env: Readonly<Record<string, string | undefined>>): AttestationSettings {
  const get = (name: string) => {
    const value = env[name]?.trim();
    return value === undefined || value === '' ? undefined : value;
  };
  const fail = (name: string, message: string): never => {
    throw new AttestationConfigError(`${name}: ${message}`);
  };
  const seconds = (name: string, fallbackMs: number) => {
    const text = get(name);
    if (text === undefined) return fallbackMs;
    if (!/^\d+$/.test(text) || Number(text) < 1) fail(name, `'${text}' is not a whole number of seconds >= 1`);
    return Number(text) * 1000;
  };
  const list = (name: string) =>
    get(name)
      ?.split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
  const pcrIndex = (name: string, text: string) => {
    if (!/^\d{1,2}$/.test(text) || Number(text) > 23) fail(name, `'${text}' is not a PCR index (0-23)`);
    return Number(text);
  };
  const d = defaultAttestationSettings;

  const bundles = list('GPUAI_AGENT_BUNDLES');
  for (const b of bundles ?? [])
    if (!/^[0-9a-f]{64}$/.test(b)) fail('GPUAI_AGENT_BUNDLES', `'${b}' is not a sha-256 hex digest`);
  const required = list('GPUAI_TPM_REQUIRED_PCRS')?.map((t) => pcrIndex('GPUAI_TPM_REQUIRED_PCRS', t));
  const expected = list('GPUAI_TPM_EXPECTED_PCRS')?.map((pair) => {
    const [index = '', value = ''] = pair.split('=');
    if (!/^[0-9a-fA-F]{64}$/.test(value)) fail('GPUAI_TPM_EXPECTED_PCRS', `'${pair}' is not <index>=<sha-256 hex>`);
    return [String(pcrIndex('GPUAI_TPM_EXPECTED_PCRS', index)), value.toLowerCase()] as const;
  });
  let jwks: JsonWebKeySet | undefined;
  const jwksText = get('GPUAI_NVIDIA_JWKS');
  if (jwksText !== undefined) {
    try {
      jwks = JSON.parse(jwksText) as JsonWebKeySet;
    } catch {
      fail('GPUAI_NVIDIA_JWKS', 'is not JSON');
    }
    const keys = (jwks as { keys?: unknown }).keys;
    if (!Array.isArray(keys) || keys.some((k) => typeof k !== 'object' || k === null || typeof k.kty !== 'string')) {
      fail('GPUAI_NVIDIA_JWKS', 'must be a JSON Web Key Set: {"keys": [{"kty": ..., "kid": ...}, ...]}');
    }
  }
  const algorithms = list('GPUAI_NVIDIA_ALGORITHMS') ?? d.nvidia.algorithms;
  for (const a of algorithms) {
    if (!/^(ES|RS|PS)(256|384|512)$/.test(a))
      fail('GPUAI_NVIDIA_ALGORITHMS', `'${a}' is not an accepted algorithm (ES*, RS*, PS*)`);
  }
  const issuer = get('GPUAI_NVIDIA_ISSUER');
  return {
    validityMs: seconds('GPUAI_ATTESTATION_VALIDITY_S', d.validityMs),
    challengeTtlMs: seconds('GPUAI_ATTESTATION_CHALLENGE_S', d.challengeTtlMs),
    measurement: bundles === undefined ? {} : { acceptedBundles: bundles },
    tpm: {
      requiredPcrs: required ?? d.tpm.requiredPcrs,
      ...(expected === undefined ? {} : { expectedPcrs: Object.fromEntries(expected) }),
    },
    nvidia: {
      ...d.nvidia,
      algorithms,
      ...(jwks === undefined ? {} : { jwks }),
      ...(issuer === undefined ? {} : { issuer }),
    },
  };
}

/** Whether any attestation variable is set (a deployment keeps the defaults otherwise). */
export const attestationEnvGiven = (env: Readonly<Record<string, string | undefined>>): boolean =>
  Object.entries(env).some(
    ([name, value]) =>
      value !== undefined && value !== '' && /^GPUAI_(ATTESTATION_|TPM_|NVIDIA_|AGENT_BUNDLES$)/.test(name),
  );
