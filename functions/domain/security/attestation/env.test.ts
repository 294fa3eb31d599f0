import { describe, expect, it } from 'vitest';
import { attestationEnvGiven, attestationSettingsFromEnv } from './env.js';
import { defaultAttestationSettings } from './settings.js';

describe('attestation settings from the environment', () => {
  it('defaults without variables', () => {
    expect(attestationSettingsFromEnv({})).toEqual(defaultAttestationSettings);
    expect(attestationEnvGiven({ GPUAI_LEASE_MS: '1', GPUAI_TPM_REQUIRED_PCRS: '' })).toBe(false);
    expect(attestationEnvGiven({ GPUAI_TPM_REQUIRED_PCRS: '0' })).toBe(true);
  });

  it('reads every variable', () => {
    const jwks = { keys: [{ kty: 'EC', crv: 'P-384', kid: 'n1', x: 'x', y: 'y' }] };
    const settings = attestationSettingsFromEnv({
      GPUAI_ATTESTATION_VALIDITY_S: '600',
      GPUAI_ATTESTATION_CHALLENGE_S: '30',
      GPUAI_AGENT_BUNDLES: `${'a'.repeat(64)}, ${'b'.repeat(64)}`,
      GPUAI_TPM_REQUIRED_PCRS: '0,7',
      GPUAI_TPM_EXPECTED_PCRS: `7=${'C'.repeat(64)}`,
      GPUAI_NVIDIA_JWKS: JSON.stringify(jwks),
      GPUAI_NVIDIA_ALGORITHMS: 'ES384,PS256',
      GPUAI_NVIDIA_ISSUER: 'https://nras.attestation.nvidia.com',
    });
    expect(settings).toEqual({
      validityMs: 600_000,
      challengeTtlMs: 30_000,
      measurement: { acceptedBundles: ['a'.repeat(64), 'b'.repeat(64)] },
      tpm: { requiredPcrs: [0, 7], expectedPcrs: { '7': 'c'.repeat(64) } },
      nvidia: {
        algorithms: ['ES384', 'PS256'],
        leewaySeconds: 30,
        jwks,
        issuer: 'https://nras.attestation.nvidia.com',
      },
    });
  });

  it.each([
    ['GPUAI_ATTESTATION_VALIDITY_S', '1.5'],
    ['GPUAI_AGENT_BUNDLES', 'abc'],
    ['GPUAI_TPM_REQUIRED_PCRS', '24'],
    ['GPUAI_TPM_EXPECTED_PCRS', '7=zz'],
    ['GPUAI_NVIDIA_JWKS', '{"keys": [{}]}'],
    ['GPUAI_NVIDIA_JWKS', 'not json'],
    ['GPUAI_NVIDIA_ALGORITHMS', 'none'],
    ['GPUAI_NVIDIA_ALGORITHMS', 'HS256'],
  ])('refuses %s=%s, naming it', (name, value) => {
    expect(() => attestationSettingsFromEnv({ [name]: value })).toThrow(new RegExp(`^${name}:`));
  });
});
