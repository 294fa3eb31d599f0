import { generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TpmQuoter } from '../../edge-agent/attest/tpm.js';
import { defaultAttestationSettings } from '../../functions/domain/security/attestation/settings.js';
import type { AttestationChallenge, AttestationEvidence, MeasurementEvidence } from '../../protocol/index.js';
import { inProcessControlPlane, ManualClock, TestNode } from '../support/in-process.js';
import { ensureTpmTools, type Swtpm, startSwtpm } from '../tpm/swtpm.js';
import { expectRefused, type Harness, submitJob } from './support.js';

/**
 * Remote attestation (functions/domain/security/attestation/*): evidence that does not prove what
 * it claims is refused and the node's record (its level, its pinned attestation key) stays as it
 * was; the only change a refused answer makes is to use up its challenge, which is single use by
 * design. A node below a job's required level never receives the job.
 */

const measurement: MeasurementEvidence = {
  type: 'agent-measurement',
  agentVersion: '0.1.0',
  bundleSha256: 'a'.repeat(64),
  configSha256: 'b'.repeat(64),
  files: 42,
};

/** Every stored item but challenges (used up by any answer), nonces and rate counters. */
const stateOf = (h: Harness) => (h.snapshot() as { pk: string }[]).filter((i) => !i.pk.startsWith('ATTEST#'));

function world(h: Harness, clock?: ManualClock) {
  const node = new TestNode(h.request, clock);
  const challenge = async (): Promise<string> => {
    const res = await node.call('POST', `/v1/nodes/${node.id}/attestation/challenge`, {});
    expect(res.status).toBe(201);
    return ((await res.json()) as AttestationChallenge).nonce;
  };
  const answer = (nonce: string, evidence: AttestationEvidence[]) =>
    node.call('POST', `/v1/nodes/${node.id}/attestation`, { nonce, evidence });
  /** Answers a fresh challenge with `evidence(nonce)`; asserts the refusal and that nothing but the challenge changed. */
  const refused = async (
    evidence: (nonce: string) => Promise<AttestationEvidence[]> | AttestationEvidence[],
    status: number,
    code: string,
  ) => {
    const nonce = await challenge();
    const before = stateOf(h);
    await expectRefused(await answer(nonce, await evidence(nonce)), status, code);
    expect(stateOf(h)).toEqual(before);
    // The challenge is used up: the same nonce with good evidence is refused too.
    await expectRefused(await answer(nonce, [measurement]), 400, 'challenge_unknown');
  };
  const level = async () =>
    ((await (await h.api(`/v1/nodes/${node.id}`)).json()) as { attestation?: { level: string } }).attestation?.level ??
    'none';
  return { node, challenge, answer, refused, level };
}

describe('NVIDIA attestation tokens', () => {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const signer = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const jwk = {
    ...(signer.publicKey.export({ format: 'jwk' }) as Record<string, string>),
    kty: 'EC',
    kid: 'nras-1',
    alg: 'ES384',
  };
  const clock = new ManualClock(Date.now());

  function jwt(
    claims: Record<string, unknown>,
    header: Record<string, unknown> = { alg: 'ES384', kid: 'nras-1' },
    key: KeyObject = signer.privateKey,
  ) {
    const input = `${b64(header)}.${b64(claims)}`;
    if (header.alg === 'none') return `${input}.`;
    return `${input}.${sign('sha384', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
  }
  const claims = (nonce: string, overrides: Record<string, unknown> = {}) => ({
    iat: clock.now() / 1000 - 5,
    exp: clock.now() / 1000 + 600,
    eat_nonce: nonce,
    'x-nvidia-overall-att-result': true,
    ...overrides,
  });
  const gpu = (token: string): AttestationEvidence => ({ type: 'nvidia-gpu-token', token });

  it('refuses a token for another nonce, an expired one, an unknown key id and alg none; the node keeps its level', async () => {
    const h = inProcessControlPlane({
      clock,
      settings: {
        attestation: {
          ...defaultAttestationSettings,
          nvidia: { ...defaultAttestationSettings.nvidia, jwks: { keys: [jwk] } },
        },
      },
    });
    const w = world(h, clock);
    expect((await w.node.register()).status).toBe(201);
    // A good answer first, so that "unchanged" means the level stays, not that there was none.
    const good = await w.challenge();
    expect((await w.answer(good, [measurement, gpu(jwt(claims(good)))])).status).toBe(200);
    expect(await w.level()).toBe('measured');

    await w.refused(() => [measurement, gpu(jwt(claims('ab'.repeat(32))))], 400, 'token_nonce_mismatch');
    await w.refused(
      (n) => [measurement, gpu(jwt(claims(n, { iat: clock.now() / 1000 - 7200, exp: clock.now() / 1000 - 3600 })))],
      400,
      'token_expired',
    );
    await w.refused(
      (n) => [measurement, gpu(jwt(claims(n), { alg: 'ES384', kid: 'nobody' }))],
      400,
      'token_unknown_kid',
    );
    await w.refused(
      (n) => [measurement, gpu(jwt(claims(n), { alg: 'none', kid: 'nras-1' }))],
      400,
      'token_alg_refused',
    );
    // Signed by a key outside the set, under the known kid.
    const stranger = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey;
    await w.refused((n) => [measurement, gpu(jwt(claims(n), undefined, stranger))], 400, 'token_bad_signature');
    expect(await w.level()).toBe('measured');
    await h.close();
  });
});

describe('TPM 2.0 quotes against swtpm', () => {
  let tpm: Swtpm;
  let foreignTpm: Swtpm;
  let dirs: string[] = [];

  beforeAll(async () => {
    ensureTpmTools();
    [tpm, foreignTpm] = await Promise.all([startSwtpm(), startSwtpm()]);
    dirs = await Promise.all([mkdtemp(join(tmpdir(), 'gpuai-sec-tpm-')), mkdtemp(join(tmpdir(), 'gpuai-sec-tpm-'))]);
  }, 600_000);
  afterAll(async () => {
    await Promise.all([tpm?.stop(), foreignTpm?.stop()]);
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  it('refuses a quote over a wrong nonce, with a wrong PCR value, or from a foreign key; the level and pinned key stay', async () => {
    const h = inProcessControlPlane({
      settings: { attestation: { ...defaultAttestationSettings, tpm: { requiredPcrs: [0, 7] } } },
    });
    const w = world(h);
    expect((await w.node.register()).status).toBe(201);
    const quoter = new TpmQuoter({ tcti: tpm.tcti, dataDir: dirs[0] ?? '' });
    const foreign = new TpmQuoter({ tcti: foreignTpm.tcti, dataDir: dirs[1] ?? '' });
    const first = await w.challenge();
    expect((await w.answer(first, [measurement, await quoter.quote(first)])).status).toBe(200);
    expect(await w.level()).toBe('tpm');

    // Wrong nonce: the TPM quoted another value as qualifying data.
    await w.refused(async () => [measurement, await quoter.quote('cd'.repeat(32))], 400, 'tpm_nonce_mismatch');
    // Wrong PCR: the values sent are not the ones the TPM quoted.
    await w.refused(
      async (n) => {
        const quote = await quoter.quote(n);
        return [
          measurement,
          { ...quote, pcrs: quote.pcrs.map((p, i) => (i === 0 ? { ...p, value: 'ff'.repeat(32) } : p)) },
        ];
      },
      400,
      'tpm_pcr_digest_mismatch',
    );
    // A foreign key: another TPM's good quote (its own AK), and its quote under this node's AK.
    await w.refused(async (n) => [measurement, await foreign.quote(n)], 409, 'ak_mismatch');
    await w.refused(
      async (n) => [measurement, { ...(await foreign.quote(n)), akPublicKey: await quoter.attestationKey() }],
      400,
      'tpm_bad_signature',
    );
    expect(await w.level()).toBe('tpm');
    await h.close();
  }, 120_000);
});

describe('jobs that require an attestation level', () => {
  it('a node below the required level polling gets nothing (204); the task stays queued, unassigned', async () => {
    const h = inProcessControlPlane({ settings: { livenessMs: 1e12 } });
    const w = world(h);
    expect((await w.node.register()).status).toBe(201);
    const nonce = await w.challenge();
    expect((await w.answer(nonce, [measurement])).status).toBe(200);
    expect(await w.level()).toBe('measured');
    const bare = new TestNode(h.request);
    expect((await bare.register()).status).toBe(201);

    const job = await submitJob(h, { command: ['true'], minAttestation: 'tpm' });
    await h.cp.scheduler.schedule({ jobId: job.id });
    const tasks = () =>
      (h.snapshot() as { pk: string }[]).filter((i) => i.pk.startsWith('JOB#') || i.pk.startsWith('TASK#'));
    const before = tasks();
    for (const node of [w.node, bare]) {
      const res = await node.poll(0);
      expect(res.status, await res.clone().text()).toBe(204);
    }
    expect(tasks()).toEqual(before);
    const view = (await (await h.api(`/v1/jobs/${job.id}`)).json()) as {
      tasks: { state: string; attempts: unknown[] }[];
    };
    expect(view.tasks.map((t) => [t.state, t.attempts.length])).toEqual([['queued', 0]]);
    await h.close();
  });
});
